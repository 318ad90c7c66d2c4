"""All prompt text of the project, and the parsing of what models write back.

- Teachers get a *teacher-forcing* chain-of-thought prompt: k in-context examples from the training
  split, then the question, its options **and the gold answer**, and a request to explain step by
  step why that answer is right (``teacher_prompt``). Changing any text here changes
  ``TEACHER_TEMPLATE_VERSION`` so cached rationales are regenerated.
- The student gets task prefixes: ``predict:`` for the answer, ``explain_<teacher>:`` for each
  teacher's rationale (``student_input``); the answer target is the text of the right choice.
- Teachers are evaluated with an *answering* prompt (``answer_prompt``): the same k examples, each shown
  with its explanation (when the mode has one) and ``The answer is (b) ...``, then the question and its
  options **without** the answer; the teacher explains and concludes, and ``parse_answer`` maps its
  conclusion to an option with the student's matcher (``match_choice``).
- ``clean_rationale`` turns raw teacher output into a rationale or a reject reason;
  ``match_choice`` maps the student's generated answer to one of the options.
- Open-answer questions (no options) get the same prompts without the ``Options:`` line, the gold answer
  written as itself, and the multiple-choice wording of the default instructions replaced
  (``TeacherText.for_question``); ``parse_open_answer`` reads a teacher's own conclusion, and
  ``answers.correct`` judges it.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Sequence

from tinyllm_ray import answers
from tinyllm_ray.data.schema import LETTERS, Question

TEACHER_TEMPLATE_VERSION = "teacher-forcing-cot/1"

TEACHER_INSTRUCTION = "The following are multiple-choice questions with their correct answers."
EXPLAIN_REQUEST = "Explain step by step why {answer} is the correct answer."
RATIONALE_LEAD = "Explanation:"
# Teacher evaluation: the teacher answers by itself, explaining first and concluding with ANSWER_LEAD.
ANSWER_INSTRUCTION = "The following are multiple-choice questions. Explain step by step, then give the answer."
ANSWER_LEAD = "The answer is"
# Changes whenever the answering prompt or its parsing changes: teachers' stored answers are then redone.
ANSWER_TEMPLATE_VERSION = "answer-cot/1"

ANSWER_LABEL = "Answer:"
# The default instructions of open-answer questions (no options): the words above without "multiple-choice".
OPEN_INSTRUCTION = "The following are questions with their correct answers."
OPEN_ANSWER_INSTRUCTION = "The following are questions. Explain step by step, then give the answer."


@dataclasses.dataclass(frozen=True)
class TeacherText:
    """The teacher prompts' own words, by default the constants above; a teacher's ``prompt`` config section
    replaces any of them (``of``). Changing one changes the teacher's settings key: its rows are redone."""

    instruction: str = TEACHER_INSTRUCTION
    explain_request: str = EXPLAIN_REQUEST  # with ``{answer}``: the gold option, e.g. ``(b) 12``
    rationale_lead: str = RATIONALE_LEAD
    answer_label: str = ANSWER_LABEL
    answer_instruction: str = ANSWER_INSTRUCTION

    def for_question(self, q: Question) -> TeacherText:
        """The words for ``q``: an open question gets the open default instructions where these are the
        multiple-choice defaults (a user's own instruction is kept as written)."""
        return _opened(self) if q.is_open else self

    @classmethod
    def of(cls, section: object | None) -> TeacherText:
        """The text of a teacher's ``prompt`` section (``None`` fields keep the defaults)."""
        if section is None:
            return DEFAULT_TEXT
        return cls(**{f.name: value for f in dataclasses.fields(cls)
                      if (value := getattr(section, f.name, None)) is not None})


DEFAULT_TEXT = TeacherText()


@functools.lru_cache(maxsize=64)
def _opened(text: TeacherText) -> TeacherText:
    return dataclasses.replace(
        text, instruction=OPEN_INSTRUCTION if text.instruction == TEACHER_INSTRUCTION else text.instruction,
        answer_instruction=(OPEN_ANSWER_INSTRUCTION if text.answer_instruction == ANSWER_INSTRUCTION
                            else text.answer_instruction))


ANSWER_TASK = "answer"
ANSWER_PREFIX = "predict: "
RATIONALE_PREFIX = "explain_{teacher}: "


@dataclasses.dataclass(frozen=True)
class StudentText:
    """The student's task prefixes (``student.answer_prefix`` / ``student.rationale_prefix``), by default the
    constants above."""

    answer_prefix: str = ANSWER_PREFIX
    rationale_prefix: str = RATIONALE_PREFIX  # with ``{teacher}``

    @classmethod
    def of(cls, student: object) -> StudentText:
        return cls(answer_prefix=getattr(student, "answer_prefix", ANSWER_PREFIX),
                   rationale_prefix=getattr(student, "rationale_prefix", RATIONALE_PREFIX))

    def prefix(self, task: str) -> str:
        """``predict: `` for the answer task, ``explain_<teacher>: `` for a teacher's rationale task."""
        return self.answer_prefix if task == ANSWER_TASK else self.rationale_prefix.format(teacher=task)


STUDENT_TEXT = StudentText()

# A causal (decoder-only) student reads its input, this, then writes its target.
CAUSAL_SEPARATOR = "\n"


def format_options(choices: Sequence[str]) -> str:
    """``(a) first (b) second ...``"""
    return " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))


def format_answer(q: Question) -> str:
    """``(b) 12`` for a multiple-choice question, the answer itself for an open one."""
    return q.answer if q.is_open else f"({q.answer_letter}) {q.answer}"


def question_block(q: Question) -> str:
    """Context (if any), question and options (if any): what every prompt shows of a question."""
    lines = [f"Context: {q.context}"] if q.context else []
    lines.append(f"Q: {q.question}")
    if not q.is_open:
        lines.append(f"Options: {format_options(q.choices)}")
    return "\n".join(lines)


def teacher_prompt(q: Question, shots: Sequence[Question], shot_rationales: Sequence[str] = (),
                   text: TeacherText = DEFAULT_TEXT) -> str:
    """The teacher-forcing chain-of-thought prompt for ``q`` (in the words of ``text``).

    ``shots`` are solved examples (question, options, answer); where ``shot_rationales`` gives a
    rationale for a shot it is shown after the shot's answer, as a worked explanation.
    """
    text = text.for_question(q)
    parts = [text.instruction]
    for i, shot in enumerate(shots):
        block = f"{question_block(shot)}\n{text.answer_label} {format_answer(shot)}"
        if i < len(shot_rationales) and shot_rationales[i]:
            block += f"\n{text.rationale_lead} {shot_rationales[i]}"
        parts.append(block)
    parts.append(
        f"{question_block(q)}\n{text.answer_label} {format_answer(q)}\n"
        f"{text.explain_request.format(answer=format_answer(q))}\n{text.rationale_lead}"
    )
    return "\n\n".join(parts)


def conclusion(q: Question) -> str:
    """``The answer is (b) 12.``: how a worked example of the answering prompt ends."""
    return f"{ANSWER_LEAD} {format_answer(q)}."


def answer_prompt(q: Question, shots: Sequence[Question], shot_rationales: Sequence[str] = (),
                  text: TeacherText = DEFAULT_TEXT) -> str:
    """The prompt with which a teacher answers ``q`` itself (teacher evaluation): no gold answer for ``q``.

    Each shot shows its explanation where ``shot_rationales`` gives one, then its conclusion (unless the
    explanation already ends by naming the shot's answer); the prompt ends
    with ``q``'s options and ``Explanation:``, so the teacher reasons first and concludes last.
    """
    text = text.for_question(q)
    parts = [text.answer_instruction]
    for i, shot in enumerate(shots):
        why = shot_rationales[i].strip() if i < len(shot_rationales) and shot_rationales[i] else ""
        if not _concludes_for(why, shot):  # unless it already concludes for the shot's answer
            why = f"{why} {conclusion(shot)}".strip()
        parts.append(f"{question_block(shot)}\n{text.rationale_lead} {why}")
    parts.append(f"{question_block(q)}\n{text.rationale_lead}")
    return "\n\n".join(parts)


def _concludes_for(text: str, q: Question) -> bool:
    """Whether ``text`` ends by naming ``q``'s gold answer (its option, or for an open question the same text
    or number)."""
    if not q.is_open:
        return parse_answer(text, q.choices)[1] == q.answer_index
    said = parse_open_answer(text)[1]
    return said is not None and answers.agrees(said, q.answer)


def answer_variants(q: Question, shots: Sequence[Question], shot_rationales: Sequence[str] = (),
                    text: TeacherText = DEFAULT_TEXT) -> list[str]:
    """``answer_prompt`` with all ``shots``, then one fewer, ... down to none (as ``prompt_variants``)."""
    return [answer_prompt(q, shots[:n], shot_rationales[:n], text) for n in range(len(shots), -1, -1)]


def pick_shots(q: Question, pool: Sequence[Question], k: int, seed: int) -> list[Question]:
    """k in-context examples from ``pool``, never ``q`` itself; the same for the same (seed, question)."""
    rng = random.Random(f"{seed}:{q.id}")
    if k >= len(pool):  # only then can there be too few others; count them exactly
        others = sum(p.id != q.id for p in pool)
        if k > others:
            raise ValueError(f"{k} shots requested but only {others} other training questions")
    # k + 1 draws, minus q if drawn: a uniform k-subset of the others without listing them per question.
    drawn = [pool[i] for i in rng.sample(range(len(pool)), min(k + 1, len(pool)))]
    return [p for p in drawn if p.id != q.id][:k]


def student_input(q: Question, task: str, text: StudentText = STUDENT_TEXT) -> str:
    """Student encoder input for ``task`` (``answer`` or a teacher name): its prefix, then the question."""
    return text.prefix(task) + question_block(q)


def answer_target(q: Question) -> str:
    return q.answer


def prompt_variants(q: Question, shots: Sequence[Question], shot_rationales: Sequence[str] = (),
                    text: TeacherText = DEFAULT_TEXT) -> list[str]:
    """The prompt with all ``shots``, then with one fewer, ... down to none: a prompt too long for the
    teacher's context drops examples (the last, least relevant, first) before it is rejected."""
    return [teacher_prompt(q, shots[:n], shot_rationales[:n], text) for n in range(len(shots), -1, -1)]


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
    normed = [_norm(c) for c in choices]
    said = _norm(said)
    return normed.index(said) if said in normed else None


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def match_choice(generated: str, choices: Sequence[str]) -> int | None:
    """Index of the option the student's generated answer names, or None when it names none.

    In order: the exact option text (case and punctuation ignored); a letter such as ``(b)``;
    the single option with the best word overlap (ties name none).
    """
    said = _norm(generated)
    normed = [_norm(c) for c in choices]
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
