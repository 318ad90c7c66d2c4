"""The rationale store: Parquet under ``<run>/rationales/<teacher>/``, one row per (question id, teacher).

A teacher's directory is written whole into a temporary sibling and renamed into place, then a
``_stage.json`` marker records the stage key (a hash of the data, teacher and prompt-template config)
and the stage's figures. A re-run with the same key reuses the directory; a changed key regenerates
only that teacher.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray.data

MARKER = "_stage.json"


def teacher_dir(run_dir: Path, teacher: str) -> Path:
    return run_dir / "rationales" / teacher


def finished(run_dir: Path, teacher: str, key: str) -> dict[str, Any] | None:
    """The stage figures of a finished teacher with this key, else None."""
    marker = teacher_dir(run_dir, teacher) / MARKER
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    return info if info.get("key") == key else None


def write_rationales(ds: ray.data.Dataset, run_dir: Path, teacher: str, key: str) -> dict[str, Any]:
    """Run the (lazy) rationale dataset, store it, and return the stage figures."""
    tmp = _tmp_dir(run_dir, teacher)
    start = time.perf_counter()
    ds.write_parquet(str(tmp))
    return _publish(tmp, run_dir, teacher, key, time.perf_counter() - start)


def import_rationales(table: pa.Table, run_dir: Path, teacher: str, key: str) -> dict[str, Any]:
    """Store rationales that were written elsewhere (the authors' precomputed files)."""
    tmp = _tmp_dir(run_dir, teacher)
    start = time.perf_counter()
    tmp.mkdir(parents=True)
    pq.write_table(table, tmp / "part-0.parquet")
    return _publish(tmp, run_dir, teacher, key, time.perf_counter() - start)


def _tmp_dir(run_dir: Path, teacher: str) -> Path:
    return teacher_dir(run_dir, teacher).with_name(f".{teacher}.tmp-{uuid.uuid4().hex[:8]}")


def _publish(tmp: Path, run_dir: Path, teacher: str, key: str, seconds: float) -> dict[str, Any]:
    """Move a fully written directory into place, then write its marker (last, so it means complete)."""
    final = teacher_dir(run_dir, teacher)
    info = {"key": key, "seconds": round(seconds, 3), **summarize(pq.read_table(tmp))}
    if final.exists():  # a previous run with another key: replaced by this one
        shutil.rmtree(final)
    tmp.rename(final)
    (final / MARKER).write_text(json.dumps(info, indent=2))
    return info


def summarize(table: pa.Table) -> dict[str, Any]:
    reasons = Counter(r for r in table.column("reject_reason").to_pylist() if r)
    return {
        "rows": table.num_rows,
        "rationales": table.num_rows - sum(reasons.values()),
        "rejected": sum(reasons.values()),
        "rejected_by_reason": dict(reasons),
        "tokens_generated": int(pc.sum(table.column("new_tokens")).as_py() or 0),
    }


def read_rationales(run_dir: Path, teacher: str) -> dict[str, str]:
    """Accepted rationales of one teacher, by question id."""
    table = pq.read_table(teacher_dir(run_dir, teacher), columns=["id", "rationale", "reject_reason"])
    return {
        i: text
        for i, text, reason in zip(*(table.column(c).to_pylist() for c in ("id", "rationale", "reject_reason")))
        if not reason
    }
