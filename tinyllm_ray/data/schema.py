"""The one question record every dataset reader produces and every stage consumes.

A ``Question`` is a multiple-choice item: the question text, an optional context (an abstract, a
passage), 2 to 26 distinct choices, and the gold answer as the *text* of the right choice (the
layout the TinyLLM authors use). An *open-answer* question (``data.task: open``: GSM8K, SVAMP, short-answer
QA) has no choices at all and its gold answer is a short text or a number. ``reference_rationale`` is an
optional human/generator rationale kept for benchmarks; teachers never see it.
"""

from __future__ import annotations

import dataclasses
import string
from typing import TYPE_CHECKING, Any

from tinyllm_ray.input_checks import clip

if TYPE_CHECKING:
    import pyarrow as pa

LETTERS = string.ascii_lowercase
SPLITS = ("train", "valid", "test")
HELD_OUT = ("valid", "test")
"""The splits a run has, and those held out from training (checkpoint selection on valid, the final test)."""
TASKS = ("choice", "open")
"""``choice``: multiple choice (the paper's six datasets); ``open``: no options, a short text or number answer."""


@dataclasses.dataclass(frozen=True)
class Question:
    """One question: multiple choice, or open (no ``choices``)."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: str
    context: str = ""
    reference_rationale: str = ""

    @property
    def is_open(self) -> bool:
        return not self.choices

    @property
    def answer_index(self) -> int:
        return self.choices.index(self.answer)

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer_index]

    def to_row(self) -> dict[str, Any]:
        # ``dataclasses.asdict`` gives the same dict but deep-copies every field, which a million rows feel.
        return {"id": self.id, "question": self.question, "choices": list(self.choices), "answer": self.answer,
                "context": self.context, "reference_rationale": self.reference_rationale}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Question:
        return cls(
            id=str(row["id"]),
            question=str(row["question"]),
            choices=tuple(str(c) for c in row["choices"]),
            answer=str(row["answer"]),
            context=str(row.get("context") or ""),
            reference_rationale=str(row.get("reference_rationale") or ""),
        )


def problems(q: Question) -> list[str]:
    """Why ``q`` is not a usable question (empty list when it is). A question without choices is an open one
    (its answer must be some text); whether the dataset's task wants it is ``task_problem``'s to say."""
    found = []
    for name, text in (("id", q.id), ("question", q.question), ("context", q.context), ("answer", q.answer),
                       *(("a choice", c) for c in q.choices)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # e.g. a lone surrogate from a JSON "\ud800" escape
            found.append(f"{name} is not valid Unicode text")
            return found
    if not q.id.strip():
        found.append("empty id")
    if not q.question.strip():
        found.append("empty question")
    if q.is_open:
        if not q.answer.strip():
            found.append("empty answer")
        return found
    if len(q.choices) < 2:
        found.append(f"{len(q.choices)} choice(s); at least 2 needed")
    if len(q.choices) > len(LETTERS):
        found.append(f"{len(q.choices)} choices; at most {len(LETTERS)} supported")
    if any(not c.strip() for c in q.choices):
        found.append("an empty choice")
    # A repeated wrong option is harmless (the authors' OBQA train has a few); an ambiguous answer is not.
    if len(q.choices) >= 2 and len(set(q.choices)) < 2:
        found.append("fewer than 2 distinct choices")
    if q.answer not in q.choices:
        found.append(f"answer {clip(q.answer)} is not among the choices")
    elif q.choices.count(q.answer) > 1:
        found.append(f"the answer appears {q.choices.count(q.answer)} times among the choices")
    return found


def task_problem(q: Question, task: str) -> str:
    """Why ``q`` does not belong to a dataset of ``task`` (``""`` when it does)."""
    if task == "choice" and q.is_open:
        return "0 choice(s); at least 2 needed (data.task is choice)"
    if task == "open" and not q.is_open:
        return f"{len(q.choices)} choices but data.task is open"
    return ""


def arrow_schema() -> pa.Schema:
    """The Arrow schema of ``Question.to_row`` (pyarrow imported here: the GPU check uses ``Question`` without it)."""
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("question", pa.string()), ("context", pa.string()),
                      ("choices", pa.list_(pa.string())), ("answer", pa.string()),
                      ("reference_rationale", pa.string())])


def to_table(questions: list[Question]) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_pylist([q.to_row() for q in questions], schema=arrow_schema())
