"""The rationale store: Parquet under ``<run>/rationales/<teacher>/``, one row per (question id, teacher, role).

Every row carries a ``key``: a hash of the teacher's generation settings (model, engine, sampling,
template version, post-processing) and of the row's prompts (so of its in-context examples). While a
teacher runs, each finished block of rows is appended as its own ``part-*.parquet`` (written to a
temporary name, then renamed), so a crash loses at most the blocks in flight, and a re-run generates
only the rows whose key is not stored yet. When a teacher is complete, ``finish`` compacts its rows
into one ``rationales.parquet`` (rows of stale keys dropped, one row per key) and writes the
``_stage.json`` marker (the stage key and figures) last: the marker means "complete".

Columns: ``id, teacher, role, key, rationale, reject_reason, raw, prompt_tokens, new_tokens, shots_used, node,
gpus`` (the Ray node and GPU ids of the actor that wrote the row), ``predicted``, ``said``, ``finish`` (why the
generation stopped: ``eos``, ``length``, or empty: not generated, or stored before the column existed). Role ``train`` rows
are the rationales the student learns from, ``shot`` rows the zero-shot rationales of a ``generated``-mode
example pool, ``valid``/``test`` rows the teacher's own answers to held-out questions (``rationale`` its
explanation, ``said`` its conclusion, ``predicted`` the option that names or -1); ``evaluation`` scores those.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tinyllm_ray import answers, markers

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
    ("finish", pa.string()),
])
# Columns a store written before they existed lacks, and their value there.
_ADDED = {"predicted": -1, "said": "", "finish": ""}


def teacher_dir(run_dir: Path, teacher: str) -> Path:
    return run_dir / "rationales" / teacher


QUARANTINE = "quarantine"


class DamagedStoreError(RuntimeError):
    """A stored file failed to read or to check after the run had counted on it (moved to ``quarantine/``)."""


def quarantine(path: Path, why: str) -> Path:
    """Move a stored file that failed to read or to check into ``quarantine/`` beside it (never deleted: the user
    may want it), with a warning naming it; its rows count as not stored, so they are generated again."""
    place = path.parent / QUARANTINE
    place.mkdir(exist_ok=True)
    target = place / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    path.rename(target)
    log.warning("rationale store: %s failed its check (%s); moved to %s, its rows will be generated again",
                path, why, target)
    return target


def quarantined(run_dir: Path, teacher: str) -> int:
    """How many of the teacher's files were moved aside (``quarantine``), in this run or an earlier one."""
    place = teacher_dir(run_dir, teacher) / QUARANTINE
    return sum(1 for p in place.iterdir() if p.name.endswith(".parquet") or ".parquet." in p.name) \
        if place.is_dir() else 0


def finished(run_dir: Path, teacher: str, key: str) -> dict[str, Any] | None:
    """The stage figures of a complete teacher with this key, else None. The compacted file is checked first (its
    footer, and its row count against the marker's): a damaged one is quarantined with the marker, and the teacher
    is not complete any more (its rows are generated again)."""
    directory = teacher_dir(run_dir, teacher)
    info = markers.finished(directory, key)
    path = directory / COMPACTED
    if info is None or not path.is_file():
        return None
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
        why = None if rows == info.get("stored_rows", rows) else f"{rows} rows, its marker says {info['stored_rows']}"
    except (pa.ArrowInvalid, OSError) as err:
        why = str(err)
    if why is not None:
        quarantine(path, why)
        (directory / markers.MARKER).unlink(missing_ok=True)
        return None
    return info


def stored(run_dir: Path, teacher: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Every stored row of a teacher (any key); only ``columns`` of ``SCHEMA`` when given (the others are not
    read). Files of another layout (older versions) are skipped."""
    names = list(columns) if columns is not None else SCHEMA.names
    tables = [t for path in _files(run_dir, teacher) if (t := _read(path, names)) is not None]
    return pa.concat_tables(tables) if tables else _schema(names).empty_table()


def _files(run_dir: Path, teacher: str) -> list[Path]:
    """The stored files in the order their rows count (the compacted file sorts after the parts)."""
    return sorted(teacher_dir(run_dir, teacher).glob("*.parquet"))


def _schema(names: Sequence[str]) -> pa.Schema:
    return pa.schema([SCHEMA.field(c) for c in names])


def _read(path: Path, names: Sequence[str], row_group: int | None = None) -> pa.Table | None:
    """``names`` of one stored file (or of one of its row groups) in ``SCHEMA``'s types, columns added since it
    was written filled in; None for a file of another layout or a torn one."""
    try:
        file = pq.ParquetFile(path, page_checksum_verification=True)  # pages written with CRCs are checked
        have = set(file.schema_arrow.names)
        if not set(SCHEMA.names) <= have | _ADDED.keys():
            return None
        read = [c for c in names if c in have]  # the rest: _ADDED, filled in
        table = file.read(columns=read) if row_group is None else file.read_row_group(row_group, columns=read)
    except (pa.ArrowInvalid, OSError) as err:  # torn by a crash or damaged on disk: its rows are generated again
        moved = quarantine(path, str(err))
        if row_group is not None:  # ``finish`` chose rows of this file from its keys: they are missing now
            raise DamagedStoreError(f"rationale store: {path} failed its check while compacting ({err}); moved to "
                                    f"{moved}. Run again: only its rows are generated again") from None
        return None
    return _with_added(table, names).select(list(names)).cast(_schema(names))


def stored_keys(run_dir: Path, teacher: str) -> pa.Array:
    """The distinct keys of every stored row, in Arrow (only the key column is read)."""
    return pc.unique(stored(run_dir, teacher, ["key"]).column("key"))


def append(run_dir: Path, teacher: str, table: pa.Table) -> None:
    """Store one finished block of rows; atomic (a reader sees the whole part or none of it)."""
    directory = teacher_dir(run_dir, teacher)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"part-{uuid.uuid4().hex}.parquet"
    tmp = directory / f".{name}.tmp"
    pq.write_table(_with_added(table).select(SCHEMA.names).cast(SCHEMA), tmp, write_page_checksum=True)
    tmp.rename(directory / name)


# Rows the compaction holds (every column) before it writes them out as one row group of the compacted file.
COMPACT_ROWS = 65_536
_SUMMARY_COLUMNS = ["role", "reject_reason", "new_tokens", "finish"]  # what ``summarize`` reads, with ``words``


def _summary_part(part: pa.Table) -> pa.Table:
    """The columns ``summarize`` reads of ``part``, its rationales reduced to their word counts (``words``): the
    compaction keeps these for every row, and a million rationales' text would be hundreds of megabytes."""
    words = pc.list_value_length(pc.utf8_split_whitespace(pc.fill_null(part.column("rationale"), "")))
    return part.select(_SUMMARY_COLUMNS).append_column("words", pc.cast(words, pa.int32()))


def finish(run_dir: Path, teacher: str, key: str, row_keys: Collection[str] | pa.Array | pa.ChunkedArray,
           extra: dict[str, Any]) -> dict[str, Any]:
    """Compact a complete teacher into one file (one row per wanted key in ``row_keys``, Python strings or an Arrow
    array: its first stored row, in stored order), then write the marker.

    Streamed: only the key column of every stored row is held to choose the rows; the chosen rows are then
    copied row group by row group (``COMPACT_ROWS`` at most at once), so a million rows' texts are never in
    memory together. Hand-written rather than a ``pyarrow.dataset`` over the directory: the store's files may be
    torn (skipped) or of an older layout (columns filled in), which one dataset scan would reject."""
    directory = teacher_dir(run_dir, teacher)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / markers.MARKER
    marker.unlink(missing_ok=True)
    files, key_columns = [], []
    for path in _files(run_dir, teacher):
        if (table := _read(path, ["key"])) is not None:
            files.append(path)
            key_columns.append(table.column("key"))
    keys = pa.chunked_array(key_columns, pa.string())
    wanted = pc.unique(row_keys if isinstance(row_keys, (pa.Array, pa.ChunkedArray))
                       else pa.array(list(row_keys), pa.string()))
    first = pc.index_in(wanted, value_set=keys)  # the first stored row of each wanted key (null: none stored)
    missing = first.null_count
    if missing:
        raise RuntimeError(f"rationale store of {teacher!r}: {missing} rows missing after generation")
    chosen = np.sort(first.to_numpy(zero_copy_only=False))
    del key_columns, keys, wanted, first
    tmp = directory / f".{COMPACTED}.tmp"
    summary: list[pa.Table] = []
    held: list[pa.Table] = []
    with pq.ParquetWriter(tmp, SCHEMA, write_page_checksum=True) as writer:
        def write() -> None:
            if held:
                writer.write_table(pa.concat_tables(held))
                held.clear()

        offset = 0
        for path in files:
            groups = pq.ParquetFile(path).metadata
            for g in range(groups.num_row_groups):
                rows = groups.row_group(g).num_rows
                lo, hi = np.searchsorted(chosen, [offset, offset + rows])
                if hi > lo:
                    part = _read(path, SCHEMA.names, row_group=g).take(pa.array(chosen[lo:hi] - offset))
                    held.append(part)
                    summary.append(_summary_part(part))
                    if sum(t.num_rows for t in held) >= COMPACT_ROWS:
                        write()
                offset += rows
        write()
    old = [p for p in directory.glob("*.parquet") if p.name != COMPACTED]
    tmp.rename(directory / COMPACTED)
    for path in old:
        path.unlink()
    table = pa.concat_tables(summary) if summary else _summary_part(SCHEMA.empty_table())
    info = {"key": key, **extra, **summarize(table), "stored_rows": len(chosen),
            "quarantined": quarantined(run_dir, teacher)}
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
    return finish(run_dir, teacher, key, table.column("key"), {"seconds": 0.0})


def summarize(table: pa.Table) -> dict[str, Any]:
    """Figures of the training rows (role ``train``): counts, rejects by reason, acceptance rate, tokens, how the
    generations ended (``ended_by_eos``, ``ended_by_limit``: at ``max_new_tokens``, cut mid-thought) and the
    accepted rationales' median length in words. ``table``: rows of ``SCHEMA`` or ``_summary_part``'s."""
    if "words" not in table.column_names:
        table = _summary_part(_with_added(table, ["finish"]))
    train = table.filter(pc.equal(table.column("role"), "train"))
    reason = train.column("reject_reason")
    given = reason.filter(pc.fill_null(pc.not_equal(reason, ""), False))
    # value_counts lists the reasons in the order they first occur, as the Counter it replaced did.
    reasons = {str(r["values"]): int(r["counts"]) for r in pc.value_counts(given).to_pylist()} if len(given) else {}
    rejected = sum(reasons.values())
    return {
        "rows": train.num_rows,
        "rationales": train.num_rows - rejected,
        "rejected": rejected,
        "rejected_by_reason": reasons,
        "acceptance_rate": round((train.num_rows - rejected) / train.num_rows, 4) if train.num_rows else None,
        "tokens_generated": int(pc.sum(table.column("new_tokens")).as_py() or 0),
        "ended_by_eos": int(pc.sum(pc.equal(train.column("finish"), "eos")).as_py() or 0),
        "ended_by_limit": int(pc.sum(pc.equal(train.column("finish"), "length")).as_py() or 0),
        "median_words": _median(train.column("words").filter(pc.equal(reason, ""))),
    }


def _median(values: pa.ChunkedArray) -> float | None:
    return float(np.median(values.to_numpy())) if len(values) else None


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
    try:
        file = pq.ParquetFile(path, page_checksum_verification=True)
        if columns is None:
            return _with_added(file.read())
        have = set(file.schema_arrow.names)
        table = file.read(columns=[c for c in columns if c in have])
    except (pa.ArrowInvalid, OSError) as err:  # damaged since the teacher finished: it is not complete any more
        moved = quarantine(path, str(err))
        (path.parent / markers.MARKER).unlink(missing_ok=True)
        raise DamagedStoreError(f"rationale store: {path} failed to read ({err}); moved to {moved}. Run again: "
                                f"teacher {teacher!r} generates its rows again") from None
    return _with_added(table, columns).select(list(columns))


def _with_added(table: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
    """``table`` with the columns added to ``SCHEMA`` since older stores were written (those of ``columns`` when
    given), filled in."""
    for name, value in _ADDED.items():
        if name not in table.column_names and (columns is None or name in columns):
            table = table.append_column(name, pa.array([value] * table.num_rows, SCHEMA.field(name).type))
    return table


RATIONALE_COLUMNS = ("id", "role", "rationale", "reject_reason")  # what ``accepted_rationales`` reads


def accepted_rationales(run_dir: Path, teacher: str) -> pa.Table:
    """Accepted training rationales of one teacher: ``id, rationale``, one row per question id (a later row of an
    id wins, as in a dict). Read and filtered in Arrow: no raw texts, no Python strings."""
    table = read_table(run_dir, teacher, RATIONALE_COLUMNS)
    keep = pc.and_(pc.equal(table.column("role"), "train"),
                   pc.fill_null(pc.equal(table.column("reject_reason"), ""), True))
    table = table.filter(keep).select(["id", "rationale"])
    ids = table.column("id")
    if len(pc.unique(ids)) < table.num_rows:
        # ``index_in`` finds an id's first row: over the ids reversed that is its last row.
        last = pc.index_in(pc.unique(ids), value_set=ids[::-1]).to_numpy()
        table = table.take(pa.array(np.sort(table.num_rows - 1 - last)))
    return table


class Rationales(Mapping[str, str]):
    """A teacher's accepted rationales by question id, held as the Arrow table ``table`` (``id, rationale``, one
    row per id) and read as a mapping. Hand-written because a million-row ``dict`` of Python strings costs a few
    hundred bytes a row in the driver: the student's rows and the exported dataset join ``table`` in Arrow
    (``student.batches.rationale_of``); a ``dict`` is built only if an entry is looked up one by one."""

    def __init__(self, table: pa.Table):
        self.table = table
        self._by_id: dict[str, str] | None = None

    def _lookup(self) -> dict[str, str]:
        if self._by_id is None:
            self._by_id = dict(zip(self.table.column("id").to_pylist(), self.table.column("rationale").to_pylist()))
        return self._by_id

    def __getitem__(self, question_id: str) -> str:
        return self._lookup()[question_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.column("id").to_pylist())

    def __len__(self) -> int:
        return self.table.num_rows


def read_rationales(run_dir: Path, teacher: str) -> Rationales:
    """Accepted training rationales of one teacher, by question id (a mapping over ``accepted_rationales``)."""
    return Rationales(accepted_rationales(run_dir, teacher))
