"""Open answers: when a short text or a number said by a model is the gold answer of an open question.

Two scorers, as the open-answer literature uses them (SQuAD's normalised exact match; GSM8K's and SVAMP's
final-number equality):

- ``exact``: both texts normalised (lower case, punctuation and the articles a/an/the removed, whitespace
  collapsed), then compared whole.
- ``numeric``: the *last* number of the said text (``1,234``, ``-3.5``, ``$12``, ``12 apples``, ``3/4``) equals
  the gold number (within 1e-6 relative): thousands separators, currency signs and trailing units are tolerated.

A multiple-choice question is scored by the option it names (``prompts.match_choice``); ``SCORERS`` names
all three for the report. These functions are pure and cheap: they run per row inside Ray workers.
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
# A number as people write it: optional sign, digits with optional thousands commas, optional decimals, or a
# fraction such as 3/4. A comma not followed by exactly three digits ends the number ("3, 4" is two numbers).
_NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?(?!\d)"
                     r"|(?<![\w.])[-−]?\.\d+(?!\d)")


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


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
