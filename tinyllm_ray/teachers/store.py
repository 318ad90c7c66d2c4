"""The rationale store: Parquet under ``<run>/rationales/<teacher>/``, one row per (question id, teacher, role).

Every row carries a ``key``: a hash of the teacher's generation settings (model, engine, sampling,
template version, post-processing) and of the row's prompts (so of its in-context examples). While a
teacher runs, each finished block of rows is appended as its own ``part-*.parquet`` (written to a
temporary name, then renamed), so a crash loses at most the blocks in flight, and a re-run generates
only the rows whose key is not stored yet. When a teacher is complete, ``finish`` compacts its rows
into one ``rationales.parquet`` (rows of stale keys dropped, one row per key) and writes the
``_stage.json`` marker (the stage key and figures) last: the marker means "complete".

Columns: ``id, teacher, role, key, rationale, reject_reason, raw, prompt_tokens, new_tokens, shots_used, node,
gpus`` (the Ray node and GPU ids of the actor that wrote the row), ``predicted``, ``said``. Role ``train`` rows
are the rationales the student learns from, ``shot`` rows the zero-shot rationales of a ``generated``-mode
example pool, ``valid``/``test`` rows the teacher's own answers to held-out questions (``rationale`` its
explanation, ``said`` its conclusion, ``predicted`` the option that names or -1); ``evaluation`` scores those.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tinyllm_ray import answers, stages

log = logging.getLogger("tinyllm_ray.store")

COMPACTED = "rationales.parquet"
SCHEMA = pa.schema([
    ("id", pa.string()),
    ("teacher", pa.string()),
    ("role", pa.string()),
    ("key", pa.string()),
    ("rationale", pa.string()),
    ("reject_reason", pa.string()),
    ("raw", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("new_tokens", pa.int64()),
    ("shots_used", pa.int64()),
    ("node", pa.string()),
    ("gpus", pa.string()),
    ("predicted", pa.int64()),
    ("said", pa.string()),
])
# Columns a store written before they existed lacks, and their value there.
_ADDED = {"predicted": -1, "said": ""}


def teacher_dir(run_dir: Path, teacher: str) -> Path:
    return run_dir / "rationales" / teacher


def finished(run_dir: Path, teacher: str, key: str) -> dict[str, Any] | None:
    """The stage figures of a complete teacher with this key, else None."""
    info = stages.finished(teacher_dir(run_dir, teacher), key)
    return info if info is not None and (teacher_dir(run_dir, teacher) / COMPACTED).is_file() else None


def stored(run_dir: Path, teacher: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Every stored row of a teacher (any key); only ``columns`` of ``SCHEMA`` when given (the others are not
    read). Files of another layout (older versions) are skipped."""
    names = list(columns) if columns is not None else SCHEMA.names
    wanted = pa.schema([SCHEMA.field(c) for c in names])
    tables = []
    for path in sorted(teacher_dir(run_dir, teacher).glob("*.parquet")):
        try:
            have = set(pq.read_schema(path).names)
            if not set(SCHEMA.names) <= have | _ADDED.keys():
                continue
            table = pq.read_table(path, columns=[c for c in names if c in have])  # the rest: _ADDED, filled in
        except (pa.ArrowInvalid, OSError) as err:  # a torn file from a crash; its rows are generated again
            log.warning("rationale store: skipping unreadable %s (%s)", path, err)
            continue
        tables.append(_with_added(table, names).select(names).cast(wanted))
    return pa.concat_tables(tables) if tables else wanted.empty_table()


def stored_keys(run_dir: Path, teacher: str) -> pa.Array:
    """The distinct keys of every stored row (``done_keys`` as an Arrow array: only the key column is read)."""
    return pc.unique(stored(run_dir, teacher, ["key"]).column("key"))


def done_keys(run_dir: Path, teacher: str) -> set[str]:
    return set(stored_keys(run_dir, teacher).to_pylist())


def append(run_dir: Path, teacher: str, table: pa.Table) -> None:
    """Store one finished block of rows; atomic (a reader sees the whole part or none of it)."""
    directory = teacher_dir(run_dir, teacher)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"part-{uuid.uuid4().hex}.parquet"
    tmp = directory / f".{name}.tmp"
    pq.write_table(_with_added(table).select(SCHEMA.names).cast(SCHEMA), tmp)
    tmp.rename(directory / name)


def finish(run_dir: Path, teacher: str, key: str, row_keys: set[str], extra: dict[str, Any]) -> dict[str, Any]:
    """Compact a complete teacher into one file (one row per wanted key), then write the marker."""
    directory = teacher_dir(run_dir, teacher)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / stages.MARKER
    marker.unlink(missing_ok=True)
    table = stored(run_dir, teacher)
    keys = table.column("key").to_pylist()
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k in row_keys:
            first.setdefault(k, i)
    missing = row_keys - first.keys()
    if missing:
        raise RuntimeError(f"rationale store of {teacher!r}: {len(missing)} rows missing after generation")
    table = table.take(sorted(first.values()))
    tmp = directory / f".{COMPACTED}.tmp"
    pq.write_table(table, tmp)
    old = [p for p in directory.glob("*.parquet") if p.name != COMPACTED]
    tmp.rename(directory / COMPACTED)
    for path in old:
        path.unlink()
    info = {"key": key, **extra, **summarize(table)}
    marker.write_text(json.dumps(info, indent=2))
    return info


def import_rationales(table: pa.Table, run_dir: Path, teacher: str, key: str) -> dict[str, Any]:
    """Store rationales written elsewhere (precomputed files): one row per id, keyed by the stage key."""
    n = table.num_rows
    defaults = {
        "role": pa.array(["train"] * n), "key": pa.array([f"{key}:{i}" for i in table.column("id").to_pylist()]),
        "raw": table.column("rationale"), "shots_used": pa.array([0] * n, pa.int64()),
        "node": pa.array([""] * n), "gpus": pa.array([""] * n), "predicted": pa.array([-1] * n, pa.int64()),
        "said": pa.array([""] * n),
    }
    for name, column in defaults.items():
        if name not in table.column_names:
            table = table.append_column(name, column)
    directory = teacher_dir(run_dir, teacher)
    for path in directory.glob("*.parquet"):  # an earlier import of other files
        path.unlink()
    append(run_dir, teacher, table)
    return finish(run_dir, teacher, key, set(table.column("key").to_pylist()), {"seconds": 0.0})


def summarize(table: pa.Table) -> dict[str, Any]:
    """Figures of the training rows (role ``train``): counts, rejects by reason, acceptance rate, tokens."""
    train = table.filter(pc.equal(table.column("role"), "train"))
    reasons = Counter(r for r in train.column("reject_reason").to_pylist() if r)
    rejected = sum(reasons.values())
    return {
        "rows": train.num_rows,
        "rationales": train.num_rows - rejected,
        "rejected": rejected,
        "rejected_by_reason": dict(reasons),
        "acceptance_rate": round((train.num_rows - rejected) / train.num_rows, 4) if train.num_rows else None,
        "tokens_generated": int(pc.sum(table.column("new_tokens")).as_py() or 0),
    }


EVALUATION_COLUMNS = ("id", "role", "predicted", "reject_reason", "said")  # what ``evaluation`` reads


def evaluation(table: pa.Table, splits: dict[str, Any], scorer: str = answers.CHOICE) -> dict[str, Any]:
    """A teacher's own accuracy on each held-out split from its ``valid``/``test`` rows: ``<split>_accuracy``
    (share of the split's questions whose stored answer is the gold option, or for open questions whose
    conclusion is the gold answer by ``scorer``; a question without a row, with a prompt too long or an answer
    naming no option counts as wrong), ``unparsed`` (answers naming no option, or no conclusion) and
    ``too_long`` (prompts that did not fit), by split. ``splits``: split name -> its questions."""
    out: dict[str, Any] = {"unparsed": {}, "too_long": {}}
    for split, questions in splits.items():
        rows = table.filter(pc.equal(table.column("role"), split))
        said = rows.column("said").to_pylist() if scorer != answers.CHOICE else [""] * rows.num_rows
        answer = {i: (p, r, text) for i, p, r, text in zip(*(rows.column(c).to_pylist()
                                                             for c in ("id", "predicted", "reject_reason")), said)}
        if scorer == answers.CHOICE:
            right = sum(answer.get(q.id, (-1, "", ""))[0] == q.answer_index for q in questions)
        else:
            right = sum(q.id in answer and not answer[q.id][1] and answers.correct(answer[q.id][2], q.answer, scorer)
                        for q in questions)
        out[f"{split}_accuracy"] = round(right / len(questions), 4) if questions else None
        reasons = Counter(answer[q.id][1] for q in questions if q.id in answer)
        out["unparsed"][split] = reasons.get("no_answer", 0)
        out["too_long"][split] = reasons.get("prompt_too_long", 0)
    return out


def read_table(run_dir: Path, teacher: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The compacted rows of a complete teacher (columns added since it was written are filled in); only
    ``columns`` when given (a million rows' rationale texts are not read to score a few thousand answers)."""
    path = teacher_dir(run_dir, teacher) / COMPACTED
    if columns is None:
        return _with_added(pq.read_table(path))
    have = set(pq.read_schema(path).names)
    return _with_added(pq.read_table(path, columns=[c for c in columns if c in have]), columns).select(list(columns))


def _with_added(table: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
    """``table`` with the columns added to ``SCHEMA`` since older stores were written (those of ``columns`` when
    given), filled in."""
    for name, value in _ADDED.items():
        if name not in table.column_names and (columns is None or name in columns):
            table = table.append_column(name, pa.array([value] * table.num_rows, SCHEMA.field(name).type))
    return table


def read_rationales(run_dir: Path, teacher: str) -> dict[str, str]:
    """Accepted training rationales of one teacher, by question id."""
    table = read_table(run_dir, teacher)
    return {
        i: text
        for i, role, text, reason in zip(
            *(table.column(c).to_pylist() for c in ("id", "role", "rationale", "reject_reason"))
        )
        if role == "train" and not reason
    }
