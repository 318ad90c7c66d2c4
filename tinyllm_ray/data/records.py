"""Reading raw records from JSON, JSON Lines and Parquet files, with errors that name the file and position.

Every reader in ``tinyllm_ray.data`` turns a source into ``Row`` values: where the record came from
(``file:line 12``), and either the ``Question`` it makes or the reason it was rejected. ``load.py``
decides what to do with the rejects (count, write, or fail in strict mode).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tinyllm_ray.data.schema import Question

SUFFIXES = (".json", ".jsonl", ".parquet")


class DataError(ValueError):
    """Input data that cannot be used at all; the message names the file and position."""


class RowError(ValueError):
    """One record that cannot become a question; the message is the reject reason."""


@dataclasses.dataclass(frozen=True)
class Row:
    where: str
    """Source position, e.g. ``obqa_train.json:line 12``."""
    question: Question | None
    reason: str = ""
    """Why the record was rejected (when ``question`` is None)."""


def read_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(position, record) for every record of a JSON array, JSON Lines or Parquet file."""
    if path.suffix == ".parquet":
        try:
            table = pq.read_table(path)
        except Exception as err:  # noqa: BLE001 -- pyarrow raises several types for a bad file
            raise DataError(f"{path}: not a readable Parquet file: {err}") from None
        for i, record in enumerate(table.to_pylist()):
            yield f"{path.name}:row {i}", record
        return
    text = read_text(path)
    if text.lstrip().startswith("["):
        for i, record in enumerate(parse_json(text, path)):
            yield f"{path.name}:item {i}", record
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {lineno} is not valid JSON (column {err.colno}: {err.msg})") from None
        yield f"{path.name}:line {lineno}", record


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 at byte {err.start}") from None


def parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid or truncated JSON at line {err.lineno}, column {err.colno}: "
                        f"{err.msg}") from None


def text_field(record: dict[str, Any], key: str) -> str:
    """A required non-empty string field, else ``RowError``."""
    value = record.get(key)
    if value is None:
        raise RowError(f"missing {key!r}")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise RowError(f"{key!r} is a {type(value).__name__}, not text")
    text = str(value).strip()
    if not text:
        raise RowError(f"empty {key!r}")
    return text
