"""Reading what models write back: a teacher's rationale, a teacher's conclusion, a student's answer.

- ``clean_rationale`` turns a teacher's raw continuation of a teacher-forcing prompt into a rationale, or a
  reject reason (``REJECT_REASONS``): empty, too short, a loop (``repetitive``), or concluding for another
  option (or, for a numeric open answer, another number).
- ``parse_answer`` reads a teacher's answer to an answering prompt: the option its last ``... answer is X``
  names (``match_choice``); ``parse_open_answer`` gives X itself, which ``answers.correct`` judges for an open
  question.
- ``match_choice`` maps a generated answer (the student's, or a teacher's conclusion) to one of the options.

The prompts that these replies follow are built in ``prompts.py``, whose ``ANSWER_TEMPLATE_VERSION`` changes with
the parsing of teachers' answers here too (their stored answers are then redone).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tinyllm_ray import answers
from tinyllm_ray.data.schema import LETTERS, Question

# Every teacher prompt ends with this lead before the rationale; a reply that repeats it has it stripped.
RATIONALE_LEAD = "Explanation:"

# The teacher may go on to invent the next question, or repeat the prompt's lead-in.
_NEXT_QUESTION = re.compile(r"(?:^|\n)\s*(?:Q:|Question:|Context:)|\n\s*\n\s*\n")
# A conclusion that names an option: "the answer is (c)", "so the correct option is: 7", "(b) is correct".
_CONCLUSION = re.compile(
    r"(?:answer|option|choice)\s+(?:is|would be|should be|must be)\s*:?\s*(?P<said>[^.\n;]+)"
    r"|\((?P<letter>[a-e])\)\s+is\s+(?:the\s+)?(?:correct|right|best)",
    re.IGNORECASE,
)

REJECT_REASONS = ("empty", "too_short", "argues_other_option", "argues_other_answer", "prompt_too_long")
# Teacher evaluation rows: the answer named no option (or there was no conclusion), or the prompt did not fit.
ANSWER_REJECT_REASONS = ("no_answer", "prompt_too_long")
# The conclusion of an answering teacher: the text after the last "answer is" up to the end of its sentence.
_ANSWER = re.compile(r"answer\s+(?:is|would be|should be|must be)\s*:?\s*", re.IGNORECASE)


# A rationale is a loop, not an explanation, when one of its sentences or lines (of at least this many words,
# numbers aside) comes back this many times: small models fall into "Step 3: The answer is (b) Max." loops.
REPEAT_WORDS, REPEATS = 3, 3
_SEGMENT = re.compile(r"(?<=[.!?])\s+|\n+")
_SENTENCE_END = re.compile(r"[.!?](?=[\s\"')\]]|$)")


def repetitive(text: str) -> bool:
    """Whether one sentence or line of ``text`` (``REPEAT_WORDS`` words or more; numbers, case and punctuation
    ignored, so "Step 1: ..." and "Step 2: ..." are one) occurs ``REPEATS`` times or more."""
    seen: dict[str, int] = {}
    for segment in _SEGMENT.split(text):
        words = re.findall(r"[^\W\d_]+", segment.lower())
        if len(words) >= REPEAT_WORDS:
            key = " ".join(words)
            seen[key] = seen.get(key, 0) + 1
            if seen[key] >= REPEATS:
                return True
    return False


def complete_sentences(text: str) -> str:
    """``text`` up to its last sentence end (``.``, ``!`` or ``?`` before a space, a closing mark or the end), or
    all of it when it has none: what is kept of a generation that stopped at ``max_new_tokens`` mid-sentence."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()] if ends else text


def clean_rationale(
    text: str, question: Question | None = None, prompt: str | None = None, min_words: int = 1,
    lead: str = RATIONALE_LEAD, cut_off: bool = False,
) -> tuple[str, str | None]:
    """(rationale, reject reason or None) from a teacher's raw continuation.

    Strips an echoed prompt and the ``Explanation:`` lead, cuts at a following question, drops the unfinished
    last sentence of a generation ``cut_off`` at its token limit (when a complete one comes before it), and
    rejects output that is empty, shorter than ``min_words`` words, a loop of one sentence (``repetitive``), or
    (given the ``question``) concludes for an option other than the gold answer.
    """
    text = text.strip()
    if prompt and text.startswith(prompt.strip()):  # some models repeat their input before answering
        text = text[len(prompt.strip()) :].strip()
    if text.startswith(lead):
        text = text[len(lead) :].strip()
    cut = _NEXT_QUESTION.search(text)
    if cut:
        text = text[: cut.start()].strip()
    if cut_off:
        text = complete_sentences(text)
    if not text:
        return "", "empty"
    if len(text.split()) < min_words:
        return text, "too_short"
    if repetitive(text):
        return text, "repetitive"
    if question is not None and question.is_open:
        if _argues_other_answer(text, question):
            return text, "argues_other_answer"
    elif question is not None and _argues_other_option(text, question):
        return text, "argues_other_option"
    return text, None


def parse_answer(text: str, choices: Sequence[str]) -> tuple[str, int | None]:
    """(explanation, option index or None) from a teacher's answer to ``answer_prompt``.

    The text is cut at a following question (the model going on by itself); the option is the one named by
    the *last* ``... answer is X`` conclusion, X mapped with ``match_choice`` (a letter, the option text, or
    the single best word overlap). No conclusion, or one naming no option, gives None: it counts as wrong.
    """
    text, said = parse_open_answer(text)
    return text, match_choice(said, choices) if said else None


def parse_open_answer(text: str) -> tuple[str, str | None]:
    """(explanation, what its last ``... answer is X`` conclusion says, or None): the text is cut at a
    following question, X runs to the end of its sentence. ``parse_answer`` maps X to an option; an open
    question's X is judged by ``answers.correct``."""
    text = text.strip()
    if text.startswith(RATIONALE_LEAD):
        text = text[len(RATIONALE_LEAD) :].strip()
    cut = _NEXT_QUESTION.search(text)
    if cut:
        text = text[: cut.start()].strip()
    found = list(_ANSWER.finditer(text))
    if not found:
        return text, None
    said = text[found[-1].end() :].split("\n", 1)[0]
    # The sentence ends at ". " or a final "."; a decimal point ("3.5") is not an end.
    said = re.split(r"\.(?:\s|$)", said, maxsplit=1)[0].strip().strip("*").strip()
    return text, said or None


def concludes_for(text: str, q: Question) -> bool:
    """Whether ``text`` ends by naming ``q``'s gold answer (its option, or for an open question the same text
    or number)."""
    if not q.is_open:
        return parse_answer(text, q.choices)[1] == q.answer_index
    said = parse_open_answer(text)[1]
    return said is not None and answers.agrees(said, q.answer)


# Which open answers the rationale filter can judge: a number is compared by value; a free text answer is not
# (a conclusion such as "the answer is Paris, the capital of France" would be a false reject), so no rationale
# of a text answer is rejected as arguing for another one.
OPEN_FILTER = "argues_other_answer: a rationale whose last conclusion states another number than a numeric gold " \
              "answer; off for text answers (their conclusions cannot be compared reliably)"


def _argues_other_answer(text: str, q: Question) -> bool:
    """True when ``q``'s gold answer is a number and the rationale's last ``... answer is X`` names another."""
    gold = answers.final_number(q.answer) if answers.is_number(q.answer) else None
    if gold is None:
        return False
    said = parse_open_answer(text)[1]
    number = answers.final_number(said) if said else None
    return number is not None and not answers.same_number(number, gold)


def _argues_other_option(text: str, q: Question) -> bool:
    """True when the rationale concludes for an option that is not the gold answer."""
    for m in _CONCLUSION.finditer(text):
        if m.group("letter"):
            named: int | None = LETTERS.index(m.group("letter").lower())
        else:
            said = m.group("said").strip()
            letter = re.match(r"\(?([a-e])\)(?:\s|$)", said.lower())
            named = LETTERS.index(letter.group(1)) if letter else _exact_choice(said, q.choices)
            if named is None and "," in said:  # "the answer is Paris, because ..."
                named = _exact_choice(said.split(",")[0], q.choices)
        if named is not None and named < len(q.choices) and named != q.answer_index:
            return True
    return False


def _exact_choice(said: str, choices: Sequence[str]) -> int | None:
    normed = [answers.normalize(c, punctuation="split", articles=False) for c in choices]
    said = answers.normalize(said, punctuation="split", articles=False)
    return normed.index(said) if said in normed else None


def match_choice(generated: str, choices: Sequence[str]) -> int | None:
    """Index of the option the student's generated answer names, or None when it names none.

    In order: the exact option text (case and punctuation ignored, articles kept); a letter such as ``(b)``;
    the single option with the best word overlap (ties name none).
    """
    said = answers.normalize(generated, punctuation="split", articles=False)
    normed = [answers.normalize(c, punctuation="split", articles=False) for c in choices]
    if said in normed:
        return normed.index(said)
    letter = re.match(r"\s*\(?([a-z])\)", generated.lower())
    if letter and LETTERS.index(letter.group(1)) < len(choices):
        return LETTERS.index(letter.group(1))
    words = set(said.split())
    if not words:
        return None
    scores = [len(words & set(c.split())) / len(words | set(c.split())) for c in normed]
    best = max(scores)
    if best == 0 or scores.count(best) > 1:
        return None
    return scores.index(best)
