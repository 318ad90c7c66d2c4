"""``bench/scale.py --quick`` runs (so the scale benchmark does not rot), and the scale fixes keep every key the
same: the streamed teacher stage key, ``Question.to_row``, chunked prompt rows, Arrow-filtered accepted rationales."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from tests.helpers import REPO
from tinyllm_ray import keys, markers, prompts
from tinyllm_ray.config import TeacherConfig
from tinyllm_ray.data import synthetic
from tinyllm_ray.data.schema import Question
from tinyllm_ray.teachers import runner

STAGES = {"read_official", "read_jsonl", "prompts", "teachers", "resume_scan", "compaction", "resume_all_done",
          "student_ingest", "evaluation"}
TEACHER_STAGES = {"teachers", "resume_scan", "compaction", "resume_all_done"}


def _quick(*stages: str, tmp: Path | None = None) -> dict:
    args = ["--stages", ",".join(stages)] if stages else []
    env = {**os.environ, "TMPDIR": str(tmp)} if tmp else None
    done = subprocess.run([sys.executable, "bench/scale.py", "--quick", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=900, check=False, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_quick_scale_bench_of_the_stages_without_ray(tmp_path: Path) -> None:
    result = _quick("read", "prompts", tmp=tmp_path)  # seconds: the data readers and prompt building only
    assert set(result["stages"]) == {"read_official", "read_jsonl", "prompts"}
    assert {(r["stage"], r["n"]) for r in result["table"]} == {(s, n) for s in result["stages"] for n in result["ns"]}
    assert all(r["seconds"] > 0 and 0.05 < r["driver_gib"] < 8 for r in result["table"])
    _check_figures(result)
    # each N's data and run (~0.5 GB at 1M) removed after (torch may leave its own cache dir there)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("scale-")] == []


@pytest.mark.slow  # ~3-5 min on 2 cores: every Ray Data actor pool starts processes that import torch
@pytest.mark.ray  # the bench starts its own local Ray in a subprocess
def test_quick_scale_bench_reports_every_stage() -> None:
    result = _quick()
    assert result["bench"] == "scale" and set(result["stages"]) == STAGES
    ns = result["ns"]
    assert len(ns) == 2 and {(r["stage"], r["n"]) for r in result["table"]} == {(s, n) for s in STAGES for n in ns}
    assert all(0.05 < row["driver_gib"] < 8 for row in result["table"] if "driver_gib" in row)
    _check_figures(result)
    seconds = {(r["stage"], r["n"]): r["seconds"] for r in result["table"]}
    for n in ns:
        # each teacher's resume scan and compaction are timed inside the teacher stage; the two teachers' may
        # overlap, so their sums are at most twice its seconds (each figure rounded to 1 ms)
        assert seconds["resume_scan", n] + seconds["compaction", n] <= 2 * seconds["teachers", n] + 0.002, n
        # run_all again over a complete store generates nothing: it takes less than the run that generated
        assert seconds["resume_all_done", n] < seconds["teachers", n], n
    assert set(result["resume_all_done_s"]) == {str(n) for n in ns}


def _rows_timed(stage: str, n: int) -> int:
    """The rows ``bench/scale.py`` times a stage over at N training questions: the teacher stages run its two
    teachers over the N questions and their own answers to valid and test (N/20 each, at least 2); the other
    stages read, prompt, ingest or score the N questions."""
    return 2 * (n + 2 * max(2, n // 20)) if stage in TEACHER_STAGES else n


def _check_figures(result: dict) -> None:
    """Every figure of the bench's summary is the one its table gives: s/1k rows is the stage's seconds over the
    rows it timed, the per-row ratio the largest N's s/1k over the smallest N's, the driver's peak per N the
    largest of that N's stages, the resume pass's seconds those of its rows."""
    table, ns = result["table"], result["ns"]
    for row in table:
        rows = _rows_timed(row["stage"], row["n"])
        # seconds are rounded to 1 ms and s/1k to 0.1 ms: 0.5 ms over the rows, per 1k, plus a little
        assert row["s_per_1k"] == pytest.approx(row["seconds"] * 1000 / rows, abs=0.5 / rows + 1e-4), row
    per_1k = {(r["stage"], r["n"]): r["s_per_1k"] for r in table}
    small, large = min(ns), max(ns)
    assert result["compared"] == [small, large]
    assert result["per_row_ratio_largest_vs_smallest"] == {
        s: round(per_1k[s, large] / per_1k[s, small], 3) if per_1k[s, small] else None for s in result["stages"]}
    assert result["driver_peak_gib"] == {
        str(n): max(r["driver_gib"] for r in table if r["n"] == n and "driver_gib" in r) for n in ns}
    assert result["resume_all_done_s"] == {str(r["n"]): r["seconds"] for r in table
                                           if r["stage"] == "resume_all_done"}


# -- the keys of existing stores stay byte-identical ---------------------------------------------------------

def _old_row(q: Question) -> dict:
    row = dataclasses.asdict(q)
    row["choices"] = list(q.choices)
    return row


def _old_stage_key(teacher: TeacherConfig, questions, answers=None) -> str:
    """``keys.teacher_key`` as it was before it streamed its JSON into the hash."""
    parts = [keys.settings_key(teacher), [_old_row(q) for q in questions]]
    if teacher.evaluate and any(answers.values() if answers else ()):
        parts.append([prompts.ANSWER_TEMPLATE_VERSION,
                      {split: [_old_row(q) for q in qs] for split, qs in sorted(answers.items())}])
    return markers.stage_key(*parts, digits=24)


ODD = [Question('ü"x', "é\\n\u2028 q?", ("a", "b\u00e9"), "a", context="ctx 🙂", reference_rationale="r"),
       Question("2", "plain", ("x", "y", "z"), "z")]


def test_streamed_stage_key_equals_the_old_one() -> None:
    splits = synthetic.generate(40, 6, 5, seed=2)
    for evaluate in (True, False):
        teacher = TeacherConfig(name="a", model="m", evaluate=evaluate)
        for train in (splits["train"], splits["train"][:1], [], ODD):
            for answers in (None, {}, {"valid": splits["valid"], "test": splits["test"]},
                            {"test": [], "valid": ODD}):
                assert keys.teacher_key(teacher, train, answers) == _old_stage_key(teacher, train, answers)


def test_every_teachers_key_in_one_pass_is_its_own_stage_key() -> None:
    """``run_all`` hashes the questions once for all its teachers: each key is the one ``teacher_key`` gives alone,
    evaluated or not, whatever its settings."""
    splits = synthetic.generate(30, 4, 4, seed=3)
    teachers = [TeacherConfig(name="a", model="m"), TeacherConfig(name="b", model="m", evaluate=False),
                TeacherConfig(name="c", model="n", shots=0, max_new_tokens=9)]
    for answers in (None, {"valid": splits["valid"], "test": splits["test"]}):
        got = keys.teacher_keys(teachers, splits["train"], answers)
        assert got == {t.name: keys.teacher_key(t, splits["train"], answers if t.evaluate else {})
                       for t in teachers}
        assert got == {t.name: _old_stage_key(t, splits["train"], answers if t.evaluate else {}) for t in teachers}
        assert len(set(got.values())) == (3 if answers else 2)  # a and b differ only in answering


def test_stage_keys_pause_the_cycle_collector_and_resume_it(monkeypatch) -> None:
    """Writing the keys makes a dict per question and no cycles: the collector's full passes made the cost per
    question grow with the questions (6.2 against 3.3 us per question at 400k), so it is off while they are written
    and on again after, also when writing fails."""
    import gc

    seen: list[bool] = []
    real = keys._row_list_json

    def writing(questions, write, chunk=4096):
        seen.append(gc.isenabled())
        return real(questions, write, chunk)

    monkeypatch.setattr(keys, "_row_list_json", writing)
    teachers = [TeacherConfig(name="a", model="m")]
    keys.teacher_keys(teachers, synthetic.generate(4, 1, 1, seed=1)["train"])
    assert seen == [False] and gc.isenabled()
    monkeypatch.setattr(keys, "_row_list_json", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        keys.teacher_keys(teachers, [])
    assert gc.isenabled()


def test_row_list_json_in_chunks_is_the_whole_json() -> None:
    questions = synthetic.generate(10, 2, 2, seed=1)["train"] + ODD
    for chunk in (1, 3, 12, 100):
        parts: list[str] = []
        keys._row_list_json(questions, parts.append, chunk=chunk)
        assert "".join(parts) == keys._json([_old_row(q) for q in questions])
    parts = []
    keys._row_list_json([], parts.append)
    assert "".join(parts) == "[]"


def test_to_row_is_asdict() -> None:
    for q in ODD:
        assert q.to_row() == _old_row(q) and list(q.to_row()) and set(q.to_row()) == set(_old_row(q))


def test_chunked_prompt_rows_equal_the_whole() -> None:
    splits = synthetic.generate(30, 5, 5, seed=4)
    train, valid = splits["train"], splits["valid"]
    own = {q.id: f"because {q.answer}" for q in train}
    explained = {q.id: (q, f"why {q.id}") for q in train[:6]}
    for mode in ("random", "similar", "generated"):
        teacher = TeacherConfig(name="a", model="m", shots=2, shots_mode=mode)
        whole = runner.prompt_rows(runner.train_variants(teacher, train, explained), train, "train", "s")
        chunked = pa.concat_tables(runner._row_chunks(runner._variants_of(teacher, train, train, explained), train,
                                                      "train", "s", chunk=7))
        assert chunked.equals(whole)
        whole = runner.prompt_rows(runner.answer_variants(teacher, valid, train, own, explained), valid, "valid", "s")
        chunked = pa.concat_tables(runner._row_chunks(
            runner._variants_of(teacher, valid, train, explained, own), valid, "valid", "s", chunk=2))
        assert chunked.equals(whole)


def test_accepted_keeps_the_old_rule() -> None:
    table = pa.table({"id": ["a", "b", "c", "a", "d"], "key": ["k1", "k2", "k3", "k4", "k5"],
                      "rationale": ["r1", "r2", "r3", "r4", "r5"], "reject_reason": ["", "empty", None, "", ""]})
    keys = {"k1", "k2", "k3", "k4"}
    old = {i: t for i, k, t, r in zip(*(table.column(c).to_pylist() for c in ("id", "key", "rationale",
                                                                             "reject_reason")))
           if k in keys and not r}
    columns = [pa.chunked_array([["k1", "k2"], ["k3"]]), pa.chunked_array([["k4"]])]  # key columns, as run() keeps
    assert runner._accepted(table, columns) == old == {"a": "r4", "c": "r3"}
