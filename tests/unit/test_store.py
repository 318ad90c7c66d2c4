"""Unit tests for tinyllm_ray.teachers.store: the resumable keyed rationale store."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tinyllm_ray import markers
from tinyllm_ray.student.batches import rationale_of
from tinyllm_ray.teachers import store

T = "teach"


def rows(ids: list[str], *, keys: list[str] | None = None, role: str = "train", reasons: list[str] | None = None,
         text: str = "because", new_tokens: int = 3) -> pa.Table:
    n = len(ids)
    return pa.table({
        "id": ids,
        "teacher": [T] * n,
        "role": [role] * n,
        "key": keys if keys is not None else [f"k-{i}" for i in ids],
        "rationale": [f"{text} {i}" for i in ids],
        "reject_reason": reasons if reasons is not None else [""] * n,
        "raw": [f"raw {i}" for i in ids],
        "prompt_tokens": pa.array([10] * n, pa.int64()),
        "new_tokens": pa.array([new_tokens] * n, pa.int64()),
        "shots_used": pa.array([2] * n, pa.int64()),
        "node": ["node"] * n,
        "gpus": [""] * n,
    })


def parquet_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in store.teacher_dir(run_dir, T).glob("*.parquet"))


def done_keys(run_dir: Path, teacher: str) -> set[str]:
    return set(store.stored_keys(run_dir, teacher).to_pylist())


def test_append_and_done_keys(tmp_path: Path) -> None:
    assert done_keys(tmp_path, T) == set()
    assert store.stored(tmp_path, T).num_rows == 0
    store.append(tmp_path, T, rows(["a", "b"]))
    store.append(tmp_path, T, rows(["c"]))
    assert done_keys(tmp_path, T) == {"k-a", "k-b", "k-c"}
    assert len(parquet_files(tmp_path)) == 2
    assert all(name.startswith("part-") for name in parquet_files(tmp_path))
    assert not list(store.teacher_dir(tmp_path, T).glob(".*"))  # no temporary files left behind
    table = store.stored(tmp_path, T)
    assert table.schema == store.SCHEMA
    assert sorted(table.column("id").to_pylist()) == ["a", "b", "c"]


def test_append_selects_schema_columns_in_order(tmp_path: Path) -> None:
    table = rows(["a"])
    shuffled = table.select(list(reversed(table.column_names))).append_column("extra", pa.array([1]))
    store.append(tmp_path, T, shuffled)
    assert pq.read_schema(next(store.teacher_dir(tmp_path, T).glob("*.parquet"))).names == store.SCHEMA.names


def test_finish_compacts_to_one_file_one_row_per_key(tmp_path: Path) -> None:
    store.append(tmp_path, T, rows(["a", "b"]))
    store.append(tmp_path, T, rows(["b", "c"]))  # a retried block: b again
    store.append(tmp_path, T, rows(["old"], keys=["stale-key"]))  # a row of earlier settings
    wanted = {"k-a", "k-b", "k-c"}
    info = store.finish(tmp_path, T, "stage-1", wanted, {"seconds": 1.5})
    assert parquet_files(tmp_path) == [store.COMPACTED]
    table = store.read_table(tmp_path, T)
    assert sorted(table.column("key").to_pylist()) == sorted(wanted)
    assert sorted(table.column("id").to_pylist()) == ["a", "b", "c"]
    assert info["key"] == "stage-1" and info["seconds"] == 1.5
    assert info["rows"] == 3 and info["rationales"] == 3 and info["rejected"] == 0
    assert info["tokens_generated"] == 9
    assert json.loads((store.teacher_dir(tmp_path, T) / markers.MARKER).read_text()) == info
    assert store.finished(tmp_path, T, "stage-1") == info
    assert store.finished(tmp_path, T, "stage-2") is None


def test_finish_again_after_more_rows(tmp_path: Path) -> None:
    store.append(tmp_path, T, rows(["a"]))
    store.finish(tmp_path, T, "s1", {"k-a"}, {})
    store.append(tmp_path, T, rows(["b"]))
    info = store.finish(tmp_path, T, "s2", {"k-a", "k-b"}, {})
    assert parquet_files(tmp_path) == [store.COMPACTED]
    assert sorted(store.read_table(tmp_path, T).column("id").to_pylist()) == ["a", "b"]
    assert store.finished(tmp_path, T, "s1") is None
    assert store.finished(tmp_path, T, "s2") == info


def test_finished_needs_marker_and_compacted_file(tmp_path: Path) -> None:
    assert store.finished(tmp_path, T, "s") is None
    store.append(tmp_path, T, rows(["a"]))
    store.finish(tmp_path, T, "s", {"k-a"}, {})
    (store.teacher_dir(tmp_path, T) / store.COMPACTED).unlink()
    assert store.finished(tmp_path, T, "s") is None


def test_finished_unreadable_marker(tmp_path: Path) -> None:
    store.append(tmp_path, T, rows(["a"]))
    store.finish(tmp_path, T, "s", {"k-a"}, {})
    (store.teacher_dir(tmp_path, T) / markers.MARKER).write_text("{not json")
    assert store.finished(tmp_path, T, "s") is None


def test_torn_part_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    store.append(tmp_path, T, rows(["a", "b"]))
    torn = store.teacher_dir(tmp_path, T) / "part-torn.parquet"
    torn.write_bytes(b"PAR1 not really parquet")
    store.append(tmp_path, T, rows(["c"]))
    assert done_keys(tmp_path, T) == {"k-a", "k-b", "k-c"}
    info = store.finish(tmp_path, T, "s", {"k-a", "k-b", "k-c"}, {})
    assert not torn.exists()
    assert parquet_files(tmp_path) == [store.COMPACTED]
    [moved] = (store.teacher_dir(tmp_path, T) / store.QUARANTINE).iterdir()  # kept aside, not deleted
    assert moved.name.startswith("part-torn.parquet.") and moved.read_bytes() == b"PAR1 not really parquet"
    assert info["quarantined"] == 1


def test_older_layout_files_ignored(tmp_path: Path) -> None:
    store.append(tmp_path, T, rows(["a"]))
    old = pa.table({"id": ["z"], "teacher": [T], "rationale": ["old layout"]})  # no key, role, ...
    pq.write_table(old, store.teacher_dir(tmp_path, T) / "part-old.parquet")
    table = store.stored(tmp_path, T)
    assert table.column("id").to_pylist() == ["a"]
    store.finish(tmp_path, T, "s", {"k-a"}, {})
    assert store.read_table(tmp_path, T).column("id").to_pylist() == ["a"]


def test_missing_wanted_row_makes_finish_raise(tmp_path: Path) -> None:
    store.append(tmp_path, T, rows(["a"]))
    store.finish(tmp_path, T, "s", {"k-a"}, {})
    assert store.finished(tmp_path, T, "s") is not None
    with pytest.raises(RuntimeError, match="1 rows missing"):
        store.finish(tmp_path, T, "s2", {"k-a", "k-b"}, {})
    # the teacher is no longer complete under any key, and no row was lost
    assert store.finished(tmp_path, T, "s") is None
    assert store.finished(tmp_path, T, "s2") is None
    assert done_keys(tmp_path, T) == {"k-a"}


def test_summarize_counts_train_rows_only() -> None:
    table = pa.concat_tables([
        rows(["a", "b", "c", "d"], reasons=["", "too_short", "", "argues_other_option"], new_tokens=5),
        rows(["p1", "p2"], role="shot", reasons=["", "empty"], new_tokens=7),
    ])
    figures = store.summarize(table)
    assert figures["rows"] == 4
    assert figures["rationales"] == 2
    assert figures["rejected"] == 2
    assert figures["rejected_by_reason"] == {"too_short": 1, "argues_other_option": 1}
    assert figures["acceptance_rate"] == 0.5
    assert figures["tokens_generated"] == 4 * 5 + 2 * 7  # every generated token, examples included


def test_summarize_rounds_and_handles_no_rows() -> None:
    figures = store.summarize(rows(["a", "b", "c"], reasons=["", "", "empty"]))
    assert figures["acceptance_rate"] == 0.6667
    empty = store.summarize(store.SCHEMA.empty_table())
    assert empty["rows"] == 0 and empty["acceptance_rate"] is None and empty["tokens_generated"] == 0


def test_read_rationales_only_accepted_train_rows(tmp_path: Path) -> None:
    store.append(tmp_path, T, rows(["a", "b", "c"], reasons=["", "too_short", ""]))
    store.append(tmp_path, T, rows(["p"], keys=["shot-p"], role="shot"))
    store.finish(tmp_path, T, "s", {"k-a", "k-b", "k-c", "shot-p"}, {})
    assert store.read_rationales(tmp_path, T) == {"a": "because a", "c": "because c"}


def test_import_rationales(tmp_path: Path) -> None:
    store.append(tmp_path, T, rows(["stale"], keys=["stale"]))  # an earlier import of other files
    table = pa.table({
        "id": ["x", "y", "z"],
        "teacher": [T] * 3,
        "rationale": ["first why", "", "third why"],
        "reject_reason": [None, "empty", None],
        "prompt_tokens": pa.array([0] * 3, pa.int64()),
        "new_tokens": pa.array([0] * 3, pa.int64()),
    })
    info = store.import_rationales(table, tmp_path, T, "imp-1")
    assert info["key"] == "imp-1"
    assert info["rows"] == 3 and info["rationales"] == 2 and info["rejected_by_reason"] == {"empty": 1}
    assert store.finished(tmp_path, T, "imp-1") == info
    assert parquet_files(tmp_path) == [store.COMPACTED]
    assert store.read_rationales(tmp_path, T) == {"x": "first why", "z": "third why"}
    stored = store.read_table(tmp_path, T)
    assert set(stored.column("role").to_pylist()) == {"train"}
    assert stored.column("raw").to_pylist() == ["first why", "", "third why"]
    # importing again (other files, another key) replaces the rows
    info = store.import_rationales(table.slice(0, 1), tmp_path, T, "imp-2")
    assert info["rows"] == 1
    assert store.finished(tmp_path, T, "imp-1") is None
    assert store.read_rationales(tmp_path, T) == {"x": "first why"}


# --- evaluation: a teacher's own answers -------------------------------------------------------------


def test_evaluation_scores_each_split_over_all_its_questions() -> None:
    from tinyllm_ray.data.schema import Question

    qs = [Question(id=f"v{i}", question=f"q{i}", choices=("x", "y", "z"), answer="y") for i in range(5)]
    table = rows(["v0", "v1", "v2", "v3"], role="valid", reasons=["", "", "no_answer", "prompt_too_long"])
    table = table.append_column("predicted", pa.array([1, 0, -1, -1], pa.int64()))  # v4 has no row at all
    train = rows(["v0"], keys=["k-train"]).append_column("predicted", pa.array([1], pa.int64()))  # not counted
    scores = store.evaluation(pa.concat_tables([table, train]), {"valid": qs, "test": []})
    assert scores["valid_accuracy"] == 0.2  # 1 right of 5: wrong, unparsed, too long and missing all count
    assert scores["test_accuracy"] is None
    assert scores["unparsed"] == {"valid": 1, "test": 0}
    assert scores["too_long"] == {"valid": 1, "test": 0}


def test_a_store_written_before_answers_existed_reads_with_no_prediction(tmp_path: Path) -> None:
    directory = store.teacher_dir(tmp_path, T)
    directory.mkdir(parents=True)
    pq.write_table(rows(["a"]), directory / "part-old.parquet")  # the layout without ``predicted``
    table = store.stored(tmp_path, T)
    assert table.column("id").to_pylist() == ["a"] and table.column("predicted").to_pylist() == [-1]
    store.finish(tmp_path, T, "s", {"k-a"}, {})
    assert store.read_table(tmp_path, T).column("predicted").to_pylist() == [-1]


def test_finished_blocks_are_stored_together_and_whatever_is_left_when_the_stage_fails(tmp_path, monkeypatch):
    """``runner._generate``: a part file per ``APPEND_ROWS`` rows (not one per actor call: a million questions'
    resume scan read tens of thousands of files), and the rows finished before a failure are kept; rows queued
    for the stage that never came back fail the pass loudly (a re-run generates them)."""
    import pyarrow as pa

    from tinyllm_ray.config import TeacherConfig
    from tinyllm_ray.teachers import runner
    from tinyllm_ray.teachers.source import PromptSource, pack

    def block(start: int, n: int) -> pa.Table:
        return pa.table({name: pa.array([f"{name}{i}" if t == pa.string() else 1 for i in range(start, start + n)],
                                        t) for name, t in zip(store.SCHEMA.names, store.SCHEMA.types)})

    class Stage:
        def __init__(self, fail_after: int | None):
            self.fail_after = fail_after

        def iter_batches(self, **_):
            for i in range(10):  # ten actor calls of 32 rows
                if i == self.fail_after:
                    raise RuntimeError("a replica died")
                yield pack([block(32 * i, 32)])

    monkeypatch.setattr(runner, "APPEND_ROWS", 100)
    monkeypatch.setenv(runner.APPEND_SECONDS_ENV, "3600")
    teacher = TeacherConfig(name="t", model="m")
    monkeypatch.setattr(runner, "rationale_stage", lambda rows, *_, **__: Stage(None))
    assert runner._generate(PromptSource.of_table(pa.table({"key": ["x"], "role": ["train"]}), 32), teacher, None,
                            tmp_path) == 320
    parts = sorted(store.teacher_dir(tmp_path, "t").glob("part-*.parquet"))
    assert len(parts) == 3  # 128 + 128 rows (a part once >= 100 are buffered), then the last 64 at the end
    assert store.stored(tmp_path, "t").num_rows == 320

    lost = PromptSource.of_table(pa.table({"key": ["x"], "role": ["train"]}), 32)
    lost.pending = 400  # rows queued for the stage, of which it returns 320
    with pytest.raises(RuntimeError, match="80 of 400 prompt rows never reached a replica"):
        runner._generate(lost, teacher, None, tmp_path / "lost")
    assert store.stored(tmp_path / "lost", "t").num_rows == 320  # what came back is kept

    monkeypatch.setattr(runner, "rationale_stage", lambda rows, *_, **__: Stage(5))
    with pytest.raises(RuntimeError, match="a replica died"):
        runner._generate(PromptSource.of_table(pa.table({"key": ["x"], "role": ["train"]}), 32), teacher, None,
                         tmp_path / "failed")
    assert store.stored(tmp_path / "failed", "t").num_rows == 5 * 32  # nothing finished is lost


# --- streamed compaction and Arrow rationales (issue #17: the driver's memory at a million questions) ------------


def _old_compaction(table: pa.Table, wanted: set[str]) -> pa.Table:
    """What ``finish`` wrote before it streamed: the first stored row of each wanted key, in stored order."""
    first: dict[str, int] = {}
    for i, k in enumerate(table.column("key").to_pylist()):
        if k in wanted:
            first.setdefault(k, i)
    return table.take(sorted(first.values()))


def test_streamed_compaction_keeps_the_rows_and_order_of_the_whole_table_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(store, "COMPACT_ROWS", 2)  # several writes, and row groups cut across parts
    store.append(tmp_path, T, rows(["a", "b", "c"], reasons=["", "too_short", ""]))
    store.finish(tmp_path, T, "s0", {"k-a", "k-b", "k-c"}, {})  # a compacted file the next finish reads too
    store.append(tmp_path, T, rows(["d", "b", "e"], text="again"))  # b again: parts sort before the compacted file
    store.append(tmp_path, T, rows(["old"], keys=["stale"]))
    store.append(tmp_path, T, rows(["v1", "v2"], role="valid", keys=["v-1", "v-2"], reasons=["", "no_answer"]))
    wanted = {"k-a", "k-b", "k-c", "k-d", "k-e", "v-2"}
    expected = _old_compaction(store.stored(tmp_path, T), wanted)
    info = store.finish(tmp_path, T, "s1", wanted, {"seconds": 2.0})
    compacted = pq.read_table(store.teacher_dir(tmp_path, T) / store.COMPACTED)
    assert compacted.schema == store.SCHEMA
    assert compacted.equals(expected)
    assert info == {"key": "s1", "seconds": 2.0, **store.summarize(expected), "stored_rows": 6, "quarantined": 0}
    by_id = dict(zip(compacted.column("id").to_pylist(), compacted.column("rationale").to_pylist()))
    assert by_id["b"] == "again b" and info["rejected_by_reason"] == {} and info["rows"] == 5


def test_finish_reads_no_whole_file_beyond_its_key_column(tmp_path: Path, monkeypatch) -> None:
    for start in range(0, 6, 2):
        store.append(tmp_path, T, rows([f"q{start}", f"q{start + 1}"]))
    whole_reads: list[list[str]] = []

    class Spy(pq.ParquetFile):
        def read(self, columns=None, **kw):
            whole_reads.append(list(columns) if columns is not None else ["<every column>"])
            return super().read(columns=columns, **kw)

    monkeypatch.setattr(store.pq, "ParquetFile", Spy)
    store.finish(tmp_path, T, "s", {f"k-q{i}" for i in range(6)}, {})
    assert whole_reads and all(columns == ["key"] for columns in whole_reads)
    assert sorted(store.read_table(tmp_path, T).column("id").to_pylist()) == sorted(f"q{i}" for i in range(6))


def test_accepted_rationales_in_arrow_and_as_a_mapping(tmp_path: Path) -> None:
    directory = store.teacher_dir(tmp_path, T)
    directory.mkdir(parents=True)
    table = rows(["a", "b", "a", "c"], keys=["k1", "k2", "k3", "k4"], reasons=["", None, "", "empty"])
    table = table.set_column(4, "rationale", pa.array(["first a", "b", "last a", "no"]))
    pq.write_table(store._with_added(table).cast(store.SCHEMA), directory / store.COMPACTED)
    accepted = store.accepted_rationales(tmp_path, T)
    assert accepted.column_names == ["id", "rationale"]
    by_id = dict(zip(accepted.column("id").to_pylist(), accepted.column("rationale").to_pylist()))
    assert by_id == {"a": "last a", "b": "b"}  # a later row of an id wins (as a dict would); a null reason is none
    mapping = store.read_rationales(tmp_path, T)
    assert mapping == {"a": "last a", "b": "b"} and len(mapping) == 2 and mapping["a"] == "last a"
    assert mapping.get("c") is None and set(mapping) == {"a", "b"}
    ids = pa.array(["c", "b", "a", "zz"])
    assert rationale_of(ids, mapping).to_pylist() == [None, "b", "last a", None]
    assert rationale_of(ids, {"a": "x"}).to_pylist() == [None, None, "x", None]  # a plain dict too


def test_summarize_counts_how_generations_ended_and_the_accepted_rationales_median_words() -> None:
    table = store._with_added(rows(["a", "b", "c", "d"], reasons=["", "", "", "repetitive"]))
    table = table.set_column(table.schema.get_field_index("finish"), "finish",
                             pa.array(["eos", "length", "eos", "length"]))
    table = table.set_column(table.schema.get_field_index("rationale"), "rationale",
                             pa.array(["one two three", "one", "one two three four five", "x " * 50]))
    figures = store.summarize(table)
    assert (figures["ended_by_eos"], figures["ended_by_limit"]) == (2, 2)
    assert figures["median_words"] == 3.0  # of the accepted ones only: 3, 1, 5
    assert store.summarize(rows(["a"]))["ended_by_eos"] == 0  # stored before the column: not counted either way


def _damage(path: Path, column: str) -> None:
    """Flip bytes in the middle of one column's pages in the first row group (the footer stays readable): what a
    bad disk or a bad copy does, and what only the pages' checksums catch."""
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(store.SCHEMA.names.index(column))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    at = start + chunk.total_compressed_size - 6  # inside the column's last page, after its header
    data = bytearray(path.read_bytes())
    data[at:at + 4] = bytes(b ^ 0xFF for b in data[at:at + 4])
    path.write_bytes(bytes(data))


def test_a_part_damaged_on_disk_is_quarantined_and_only_its_rows_are_missing(tmp_path: Path, caplog) -> None:
    store.append(tmp_path, T, rows(["a", "b"], text="x" * 400))
    store.append(tmp_path, T, rows(["c", "d"], text="y" * 400))
    damaged = sorted(store.teacher_dir(tmp_path, T).glob("part-*.parquet"))[0]
    lost = set(pq.read_table(damaged, columns=["key"]).column("key").to_pylist())
    _damage(damaged, "key")
    with caplog.at_level(logging.WARNING):
        keys = done_keys(tmp_path, T)
    assert keys == {"k-a", "k-b", "k-c", "k-d"} - lost  # the others' rows stay stored; these are generated again
    assert str(damaged) in caplog.text and "moved to" in caplog.text
    assert not damaged.exists() and store.quarantined(tmp_path, T) == 1


def test_a_compacted_file_cut_short_is_quarantined_and_the_teacher_is_no_longer_complete(tmp_path: Path) -> None:
    store.append(tmp_path, T, rows(["a", "b"]))
    store.finish(tmp_path, T, "s", {"k-a", "k-b"}, {})
    compacted = store.teacher_dir(tmp_path, T) / store.COMPACTED
    compacted.write_bytes(compacted.read_bytes()[:-40])  # cut short: "Parquet magic bytes not found in footer"
    assert store.finished(tmp_path, T, "s") is None  # not reused: its rows are generated again
    assert not compacted.exists() and store.quarantined(tmp_path, T) == 1
    assert not (store.teacher_dir(tmp_path, T) / markers.MARKER).exists()


def test_a_compacted_file_damaged_later_fails_naming_it_and_the_next_run_regenerates(tmp_path: Path) -> None:
    store.append(tmp_path, T, rows(["a", "b"], text="z" * 2000))
    store.finish(tmp_path, T, "s", {"k-a", "k-b"}, {})
    compacted = store.teacher_dir(tmp_path, T) / store.COMPACTED
    _damage(compacted, "rationale")
    assert store.finished(tmp_path, T, "s") is not None  # its footer and row count still check
    with pytest.raises(store.DamagedStoreError, match=rf"{re.escape(str(compacted))} failed to read .*Run again"):
        store.read_table(tmp_path, T)
    assert store.finished(tmp_path, T, "s") is None and done_keys(tmp_path, T) == set()
