"""Reading raw records from JSON, JSON Lines and Parquet files, with errors that name the file and position.

Every reader in ``tinyllm_ray.data`` turns a source into ``Row`` values: where the record came from
(``file:line 12``), and either the ``Question`` it makes or the reason it was rejected. ``load.py``
decides what to do with the rejects (count, write, or fail in strict mode).

Input paths are looked at with ``os.stat`` before anything is opened (``path_kind``, ``require``,
``list_dir``): a FIFO, a device, a directory where a file is expected, a symlink loop, a dangling symlink
or a permission error is a ``DataError`` naming the path, never a hang or a traceback. Reject reasons
and errors quote a value from the data through ``clip``, so a message stays short whatever the data holds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tinyllm_ray.data.schema import Question
from tinyllm_ray.input_checks import DIRECTORY, FILE, kind_problem, os_problem, require_problem, shorten

SUFFIXES = (".json", ".jsonl", ".parquet")


class DataError(ValueError):
    """Input data that cannot be used at all; the message names the file and position."""


NO_LABEL = "no answer label"
"""The reject reason of a row published without its answer (an unlabelled test split: ``load.py``)."""


class RowError(ValueError):
    """One record that cannot become a question; the message is the reject reason."""


_JSON_TOKEN = re.compile(r'"(?:[^"\\]+|\\.)*"?|[\[{]|[\]}]|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?')
"""Strings (also unterminated), brackets and numbers: enough to find where ``json.loads`` hit a limit."""


@dataclasses.dataclass(frozen=True)
class Row:
    where: str
    """Source position, e.g. ``obqa_train.json:line 12``."""
    question: Question | None
    reason: str = ""
    """Why the record was rejected (when ``question`` is None)."""


def non_finite(value: Any) -> str:
    """``NaN``, ``Infinity`` or ``-Infinity`` for a float that is one (JSON readers and Parquet float columns
    produce them), else ``""``."""
    if not isinstance(value, float) or math.isfinite(value):
        return ""
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


# -- paths ---------------------------------------------------------------------------------------------------

def path_kind(path: Path) -> str:
    """What ``path`` is (``FILE``, ``DIRECTORY``, ``FIFO (named pipe)``, ...), from ``os.stat`` alone: nothing is
    opened, so a FIFO or a device cannot block. ``DataError`` naming the path when it cannot be looked at."""
    kind, problem = kind_problem(path)
    if problem:
        raise DataError(f"{shorten(str(path))} {problem}")
    return kind


def require(path: Path, *kinds: str) -> str:
    """The kind of ``path`` when it is one of ``kinds`` (``FILE``, ``DIRECTORY``), else ``DataError``, e.g.
    ``x/train.jsonl is not a regular file: it is a FIFO (named pipe)``."""
    if problem := require_problem(path, *kinds):
        raise DataError(f"{shorten(str(path))} {problem}")
    return path_kind(path)


def list_dir(directory: Path, *, optional: bool = False) -> list[Path]:
    """The entries of ``directory``, sorted. With ``optional``, none when it does not exist or is not a
    directory; a symlink loop, a dangling symlink or a permission error is a ``DataError`` all the same."""
    if optional and (not os.path.lexists(directory) or path_kind(directory) != DIRECTORY):
        return []
    require(directory, DIRECTORY)
    try:
        return sorted(directory.iterdir())
    except OSError as err:
        raise DataError(f"{directory} {os_problem(directory, err)}") from None


# -- records -------------------------------------------------------------------------------------------------

def read_records(path: Path, label: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(position, record) for every record of a JSON array, JSON Lines or Parquet file, or of a JSON object
    holding its records as ``questions`` (BioASQ's official files).

    A line of JSON Lines that cannot be parsed, whether it is malformed or beyond what this Python reads
    (nested thousands deep, an integer of more than 4300 digits), is a ``DataError`` naming the file and
    line, like a malformed JSON array file: a broken file, not one bad record. Positions start with ``label``
    (default: the file's name).
    """
    name = label or path.name
    if path.suffix == ".parquet":
        require(path, FILE)  # pyarrow would read a directory as a dataset
        try:
            records = pq.read_table(path).to_pylist()
        except Exception as err:  # noqa: BLE001 -- pyarrow raises several types for a bad file
            raise DataError(f"{path}: not a readable Parquet file: {shorten(str(err))}") from None
        for i, record in enumerate(records):
            yield f"{name}:row {i}", record
        return
    text = read_text(path)
    if text.lstrip().startswith("["):
        for i, record in enumerate(parse_json(text, path)):
            yield f"{name}:item {i}", record
        return
    if (questions := _questions_object(text)) is not None:
        for i, record in enumerate(questions):
            yield f"{name}:question {i}", record
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {lineno} is not valid JSON (column {err.colno}: {err.msg})") from None
        except (RecursionError, ValueError) as err:
            raise DataError(f"{path}: line {lineno}: {_beyond_limits(line, err)[1]}") from None
        yield f"{name}:line {lineno}", record


_NON_SPACE = re.compile(r"\S")


def _questions_object(text: str) -> list[Any] | None:
    """The records of a file that is one JSON object holding them as ``questions`` (BioASQ's official files,
    pretty-printed or not), else ``None`` (JSON Lines, whose first line is a whole record of its own)."""
    start = _NON_SPACE.search(text)
    if start is None or text[start.start()] != "{":
        return None
    end = text.find("\n", start.start())
    try:
        first = json.loads(text[start.start():end if end >= 0 else None])
    except (ValueError, RecursionError):
        first = None  # not a whole value on its own line: a pretty-printed object, or broken JSON Lines
    else:
        more = end >= 0 and _NON_SPACE.search(text, end) is not None
        if more or not (isinstance(first, dict) and isinstance(first.get("questions"), list)):
            return None  # JSON Lines (one record per line)
        return first["questions"]
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None  # the JSON Lines reader names the line that is broken
    return value["questions"] if isinstance(value, dict) and isinstance(value.get("questions"), list) else None


def read_text(path: Path) -> str:
    """The UTF-8 text of regular file ``path`` (checked before it is opened)."""
    require(path, FILE)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 at byte {err.start}") from None
    except OSError as err:
        raise DataError(f"{path} {os_problem(path, err)}") from None


def parse_json(text: str, path: Path) -> Any:
    """The JSON value of ``text`` (read from ``path``), else ``DataError`` naming the file and line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid or truncated JSON at line {err.lineno}, column {err.colno}: "
                        f"{err.msg}") from None
    except (RecursionError, ValueError) as err:
        offset, why = _beyond_limits(text, err)
        line = text.count("\n", 0, offset) + 1
        raise DataError(f"{path}: line {line}: {why}") from None


def _beyond_limits(text: str, err: Exception) -> tuple[int, str]:
    """Where in ``text`` and why ``json.loads`` raised ``err`` for JSON that is well formed so far: nesting
    too deep for the recursion limit (``RecursionError``: the first place of the deepest nesting), or an
    integer longer than Python converts (``ValueError``: the first such integer)."""
    max_digits = sys.get_int_max_str_digits()
    depth = deepest = deepest_at = 0
    for token in _JSON_TOKEN.finditer(text):
        first = token[0][0]
        if first in "[{":
            depth += 1
            if depth > deepest:
                deepest, deepest_at = depth, token.start()
        elif first in "]}":
            depth -= 1
        elif first != '"' and isinstance(err, ValueError) and max_digits:
            digits = token[0].lstrip("-")
            if digits.isdigit() and len(digits) > max_digits:
                return token.start(), f"an integer of {len(digits)} digits; at most {max_digits} can be read"
    if isinstance(err, RecursionError):
        return deepest_at, f"JSON nested {deepest} levels deep, too deep to read"
    return 0, f"not readable as JSON: {shorten(str(err))}"


def text_field(record: dict[str, Any], key: str) -> str:
    """A required non-empty string field, else ``RowError``; numbers are taken as text, except NaN and the
    infinities."""
    value = record.get(key)
    if value is None:
        raise RowError(f"missing {key!r}")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise RowError(f"{key!r} is a {type(value).__name__}, not text")
    if special := non_finite(value):
        raise RowError(f"{key!r} is {special}, not text")
    text = str(value).strip()
    if not text:
        raise RowError(f"empty {key!r}")
    return text
