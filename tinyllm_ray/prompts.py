"""Building prompts: all the text teachers and the student are given to read.

- Teachers get a *teacher-forcing* chain-of-thought prompt: k in-context examples from the training
  split, then the question, its options **and the gold answer**, and a request to explain step by
  step why that answer is right (``teacher_prompt``). Changing any text here changes
  ``TEACHER_TEMPLATE_VERSION`` so cached rationales are regenerated.
- The student gets task prefixes: ``predict:`` for the answer, ``explain_<teacher>:`` for each
  teacher's rationale (``student_input``); the answer target is the text of the right choice.
- Teachers are evaluated with an *answering* prompt (``answer_prompt``): the same k examples, each shown
  with its explanation (when the mode has one) and ``The answer is (b) ...``, then the question and its
  options **without** the answer; the teacher explains and concludes.
- Open-answer questions (no options) get the same prompts without the ``Options:`` line, the gold answer
  written as itself, and the multiple-choice wording of the default instructions replaced
  (``TeacherText.for_question``).

What the models write back is read in ``replies.py`` (rationales, conclusions, the option an answer names).
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Sequence

from tinyllm_ray.data.schema import LETTERS, Question
from tinyllm_ray.replies import RATIONALE_LEAD, concludes_for

TEACHER_TEMPLATE_VERSION = "teacher-forcing-cot/1"

TEACHER_INSTRUCTION = "The following are multiple-choice questions with their correct answers."
EXPLAIN_REQUEST = "Explain step by step why {answer} is the correct answer."
# RATIONALE_LEAD ("Explanation:") lives in replies.py, which strips it from what teachers write back.
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
        if not concludes_for(why, shot):  # unless it already concludes for the shot's answer
            why = f"{why} {conclusion(shot)}".strip()
        parts.append(f"{question_block(shot)}\n{text.rationale_lead} {why}")
    parts.append(f"{question_block(q)}\n{text.rationale_lead}")
    return "\n\n".join(parts)


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
