"""Open answers: when a short text or a number said by a model is the gold answer of an open question.

Two scorers, as the open-answer literature uses them (SQuAD's normalised exact match; GSM8K's and SVAMP's
final-number equality):

- ``exact``: both texts normalised (lower case, punctuation and the articles a/an/the removed, whitespace
  collapsed), then compared whole.
- ``numeric``: the *last* number of the said text (``1,234``, ``-3.5``, ``$12``, ``12 apples``, ``3/4``) equals
  the gold number (within 1e-6 relative): thousands separators, currency signs and trailing units are tolerated.

A multiple-choice question is scored by the option it names (``replies.match_choice``); ``SCORERS`` names
all three for the report. These functions are pure and cheap: they run per row inside Ray workers.

This module holds the project's one text normaliser (``normalize``: SQuAD's by default, the option matcher's and
the echo check's with other settings) and its one number pattern (``numbers`` finds it in running text,
``plain_number`` checks a dataset's gold answer); it imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable

CHOICE = "choice"
EXACT = "exact"
NUMERIC = "numeric"
SCORERS = {
    CHOICE: "the option named (option text, letter, or best word overlap)",
    EXACT: "normalised exact match (case, whitespace, punctuation and articles ignored)",
    NUMERIC: "numeric equality of the final number (thousands separators and units tolerated)",
}

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_MARK = re.compile(r"[^\w\s]")
PUNCTUATION = ("drop", "split", "keep")
"""What ``normalize`` does with punctuation: delete ASCII marks, turn any mark into a space, or leave it."""

# A number as people write it: optional minus, digits with optional thousands commas, optional decimals. A comma
# not followed by exactly three digits ends the number ("3, 4" is two numbers).
_DECIMAL = r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# In running text it may also be a fraction such as 3/4 or start at its point (.5), in any script's digits.
_NUMBER = re.compile(rf"(?<![\w.]){_DECIMAL}(?:\s*/\s*\d+(?:\.\d+)?)?(?!\d)|(?<![\w.])[-−]?\.\d+(?!\d)")
# A gold answer's number is stricter: ASCII digits only, nothing around it (no fraction, sign or unit).
_PLAIN_NUMBER = re.compile(_DECIMAL, re.ASCII)


def normalize(text: str, *, punctuation: str = "drop", articles: bool = True) -> str:
    """Lower case and single spaces; by default SQuAD's answer normalisation: ASCII punctuation deleted
    (``don't`` -> ``dont``) and the articles a/an/the removed.

    ``punctuation="split"`` turns every mark that is not a letter, digit or ``_`` (in any script) into a space
    (``red-apple`` -> ``red apple``: how option texts are compared); ``"keep"`` leaves the marks as they are.
    ``articles=False`` keeps a/an/the.
    """
    text = text.lower()
    if punctuation == "drop":
        text = text.translate(_PUNCT)
    elif punctuation == "split":
        text = _MARK.sub(" ", text)
    elif punctuation != "keep":
        raise ValueError(f"punctuation must be one of {', '.join(PUNCTUATION)}, got {punctuation!r}")
    if articles:
        text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def plain_number(text: str) -> str | None:
    """``text`` as a bare number with its thousands separators removed (``"1,234"`` -> ``"1234"``, ``"-3.5"``
    kept), or None when it is not one number written plainly (``"3,4"``, ``"$5"``, ``"5 apples"``, ``"3/4"``,
    ``""``): how a dataset's gold number must be written, where ``numbers`` reads what a model says."""
    text = text.strip()
    if not _PLAIN_NUMBER.fullmatch(text):
        return None
    return text.replace(",", "").replace("−", "-")


def numbers(text: str) -> list[float]:
    """Every number written in ``text``, in order (``$1,234.50`` -> 1234.5, ``3/4`` -> 0.75)."""
    found = []
    for match in _NUMBER.finditer(text):
        raw = match.group(0).replace(",", "").replace("−", "-").replace(" ", "")
        if "/" in raw:
            top, bottom = raw.split("/")
            if float(bottom) == 0:
                continue
            value = float(top) / float(bottom)
        else:
            value = float(raw)
        if math.isfinite(value):
            found.append(value)
    return found


def final_number(text: str) -> float | None:
    """The last number written in ``text`` (a conclusion states its result last), or None."""
    found = numbers(text)
    return found[-1] if found else None


def is_number(text: str) -> bool:
    """Whether ``text`` *is* a number, allowing a currency sign, separators and a trailing unit word or %
    (``72``, ``$1,200``, ``3.5 km``, ``-4``): one number and at most one short word around it."""
    found = numbers(text)
    if len(found) != 1:
        return False
    rest = _NUMBER.sub(" ", text).translate(_PUNCT).split()
    return len(rest) <= 1 and all(len(word) <= 12 for word in rest)


def same_number(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def correct(said: str, gold: str, scorer: str) -> bool:
    """Whether ``said`` (a model's answer) is the open question's ``gold`` answer under ``scorer``."""
    if scorer == NUMERIC:
        want, got = final_number(gold), final_number(said)
        return want is not None and got is not None and same_number(got, want)
    if scorer == EXACT:
        return bool(normalize(gold)) and normalize(said) == normalize(gold)
    raise ValueError(f"unknown open-answer scorer {scorer!r} (known: {EXACT}, {NUMERIC})")


def scorer_of(data: object) -> str:
    """How a run's answers are judged, from its resolved ``data`` config section: its ``scorer`` for an open
    task, ``choice`` (options matched) otherwise."""
    if getattr(data, "task", None) != "open":
        return CHOICE
    return getattr(data, "scorer", None) or CHOICE


def agrees(said: str, gold: str) -> bool:
    """Whether ``said`` states ``gold`` by either scorer (the prompts' check that a worked example already
    concludes with its answer)."""
    return correct(said, gold, EXACT) or (is_number(gold) and correct(said, gold, NUMERIC))


def infer_scorer(golds: Iterable[str]) -> str:
    """``numeric`` when every gold answer is a number (and there is one), else ``exact``."""
    seen = False
    for gold in golds:
        if not is_number(gold):
            return EXACT
        seen = True
    return NUMERIC if seen else EXACT
