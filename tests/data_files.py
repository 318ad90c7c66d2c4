"""Data files written here for the tests of the dataset readers (``tinyllm_ray.data``): records as JSON Lines,
a JSON array or Parquet, hub-style labelled choices, GSM8K records, and the rows read back by position."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tinyllm_ray.data.records import Row
from tinyllm_ray.data.schema import Question


def write(path: Path, records: list, fmt: str | None = None) -> Path:
    """Write ``records`` as JSON Lines, a JSON array or Parquet (by ``fmt`` or the file suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or path.suffix.lstrip(".")
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


def by_where(rows: list[Row]) -> dict[str, Question | str]:
    """Each row's question, or its reject reason, by position."""
    return {row.where: row.question if row.question is not None else row.reason for row in rows}


def labeled(texts: list[str], labels: list[str]) -> dict:
    return {"text": texts, "label": labels}


def gsm8k(question: str, answer: str) -> dict:
    return {"question": question, "answer": answer}
