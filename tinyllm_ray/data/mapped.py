"""Column-mapped files: any JSON / JSON Lines / Parquet file (or folder of split files) whose columns a
``data.columns`` mapping names (``question``, ``answer``, optional ``choices``, ``id``, ``context``).

With ``choices`` a row is a multiple-choice question whose answer is given as an option's text, letter or
0-based index; without it every row is an open question whose answer is the text (or number) in its answer
column. The fields are read with the hub schemas' own field readers (``hub.py``), so the same malformed value
gets the same reject reason in both.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinyllm_ray.data.hub import choice_for_label, number_text, passages, record_id, strings
from tinyllm_ray.data.records import (
    DIRECTORY,
    FILE,
    NO_LABEL,
    SUFFIXES,
    DataError,
    Row,
    RowError,
    non_finite,
    require,
    text_field,
)
from tinyllm_ray.data.schema import LETTERS, Question
from tinyllm_ray.data.split_files import find_split_files, read_split_files
from tinyllm_ray.input_checks import clip

MAPPED_KEYS = {"question": True, "choices": False, "answer": True, "id": False, "context": False}
"""Column mapping keys of ``read_mapped`` -> whether required; without ``choices`` the rows are open questions."""


def _mapped_answer(raw: Any, choices: Sequence[str], column: str) -> str:
    """The answer as choice text, else as a letter (``B``, ``b``, ``(c)``), else as a 0-based index."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise RowError(NO_LABEL)
    if special := non_finite(raw):
        raise RowError(f"{column!r} is {special}, not text")
    if isinstance(raw, str):
        text = raw.strip()
        if text in choices:
            return text
        if letter := re.fullmatch(r"\(?([A-Za-z])\)?", text):
            return choice_for_label(choices, [c.upper() for c in LETTERS[:len(choices)]], letter[1].upper())
    elif isinstance(raw, int) and not isinstance(raw, bool):
        if 0 <= raw < len(choices):
            return choices[raw]
        raise RowError(f"answer index {clip(raw)} is out of range for {len(choices)} choices")
    raise RowError(f"{column!r} value {clip(raw)} is neither a choice, a letter nor a 0-based index")


def _open_answer(raw: Any, column: str) -> str:
    """The answer of an open question: text as is (stripped), a number as text (``18`` -> ``"18"``, ``2.5`` ->
    ``"2.5"``, ``18.0`` -> ``"18"``); a bool, NaN, an infinity or a list is rejected."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise RowError(NO_LABEL)
    if isinstance(raw, str):
        return raw.strip()
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return number_text(raw, repr(column))
    raise RowError(f"{column!r} value {clip(raw)} is neither text nor a number")


def _mapped(record: dict[str, Any], where: str, *, columns: dict[str, str]) -> Question:
    question = text_field(record, columns["question"])
    choices: tuple[str, ...] = ()
    if "choices" in columns:
        if columns["choices"] not in record:
            raise RowError(f"missing {columns['choices']!r}")
        choices = tuple(strings(record[columns["choices"]], repr(columns["choices"])))
    if columns["answer"] not in record:
        raise RowError(f"missing {columns['answer']!r}")
    raw = record[columns["answer"]]
    answer = (_mapped_answer(raw, choices, columns["answer"]) if "choices" in columns
              else _open_answer(raw, columns["answer"]))
    context = passages(record.get(columns["context"]), repr(columns["context"])) if "context" in columns else ""
    return Question(id=record_id(record, columns.get("id"), "", where), question=question, choices=choices,
                    answer=answer, context=context)


def read_mapped(path: Path, columns: dict[str, str]) -> dict[str, list[Row]]:
    """Rows by split from a JSON/JSON Lines/Parquet file (the train split) or a directory of split files,
    whose columns are named by ``columns`` (keys ``question``, ``answer``, optional ``choices``, ``id``,
    ``context``). With ``choices`` the answer is an option's text, letter or 0-based index; without it every
    row is an open question whose answer is the text (or number) in the answer column.
    """
    for key in columns:
        if key not in MAPPED_KEYS:
            raise DataError(f"columns: unknown key {key!r} (known: {', '.join(MAPPED_KEYS)})")
    if missing := [key for key, required in MAPPED_KEYS.items() if required and key not in columns]:
        raise DataError(f"columns: {', '.join(map(repr, missing))} must be given")
    path = Path(path)
    if require(path, FILE, DIRECTORY) == FILE:
        if path.suffix not in SUFFIXES:
            raise DataError(f"{path}: not a {'/'.join(SUFFIXES)} file")
        files = {"train": [path]}
    else:
        files = find_split_files(path)
    return read_split_files(files, functools.partial(_mapped, columns=dict(columns)))
