"""End to end on a shared local Ray: teachers -> rationales -> Ray Train student -> evaluation -> report."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest

from tests.conftest import tiny_run_config
from tinyllm_ray import pipeline
from tinyllm_ray.config import from_dict

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def first_run(ray_local, tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    config = from_dict(tiny_run_config(tiny_models, out, "e2e"))
    return config, pipeline.run(config), out / "e2e"


def test_report_has_every_stage(first_run):
    _, report, run_dir = first_run
    on_disk = json.loads((run_dir / "report.json").read_text())
    assert on_disk == report
    assert {k: report["dataset"][k] for k in ("name", "train", "valid", "test")} == {
        "name": "synthetic", "train": 48, "valid": 16, "test": 16}
    assert report["dataset"]["rejected"] == {"train": {}, "valid": {}, "test": {}}
    assert report["dataset"]["valid_from_train"] is False
    assert [t["name"] for t in report["teachers"]] == ["teacher-a", "teacher-b"]
    for t in report["teachers"]:
        assert t["rationales"] + t["rejected"] == 48
        assert t["tokens_generated"] > 0 and t["seconds"] > 0
        assert set(t) >= {"name", "model", "rationales", "rejected", "tokens_generated", "seconds"}
    s = report["student"]
    assert s["steps"] == 3  # 48 questions / batch 16, one epoch
    assert 0.0 <= s["valid_accuracy"] <= 1.0 and 0.0 <= s["test_accuracy"] <= 1.0
    assert s["loss_weights"] == {"answer": 1.0, "teacher-a": 0.5, "teacher-b": 0.5}
    t = report["timings"]
    assert t["total_s"] >= t["generate_s"] + t["train_s"] + t["eval_s"] > 0


def test_run_dir_holds_rationales_student_and_predictions(first_run):
    _, report, run_dir = first_run
    assert (run_dir / "config.yaml").is_file()
    for teacher in ("teacher-a", "teacher-b"):
        table = pq.read_table(run_dir / "rationales" / teacher)
        assert table.num_rows == 48
        assert sorted(set(table.column("teacher").to_pylist())) == [teacher]
        assert len(set(table.column("id").to_pylist())) == 48
    assert (run_dir / "student" / "config.json").is_file()
    assert (run_dir / "student" / "tokenizer.json").is_file()
    predictions = pq.read_table(run_dir / "predictions.parquet")
    assert predictions.num_rows == 32
    correct = predictions.filter(predictions.column("split").to_numpy(zero_copy_only=False) == "valid")
    assert sum(correct.column("correct").to_pylist()) / 16 == pytest.approx(report["student"]["valid_accuracy"])
    md = (run_dir / "report.md").read_text()
    assert "| teacher-a |" in md and "valid accuracy" in md


def test_same_config_again_reuses_finished_stages(first_run):
    config, report, _ = first_run
    again = pipeline.run(config)
    assert [t["seconds"] for t in again["teachers"]] == [t["seconds"] for t in report["teachers"]]
    assert again["student"]["seconds"] == report["student"]["seconds"]
    assert again["student"]["valid_accuracy"] == report["student"]["valid_accuracy"]
    assert again["timings"]["train_s"] < report["timings"]["train_s"]


def test_label_only_baseline_without_teachers(ray_local, tiny_models, tmp_path):
    raw = tiny_run_config(tiny_models, tmp_path, "baseline", teachers=0)
    report = pipeline.run(from_dict(raw))
    assert report["teachers"] == []
    assert report["student"]["loss_weights"] == {"answer": 1.0}
    assert report["student"]["steps"] == 3


def test_failing_teacher_is_named_and_finished_teachers_are_kept(ray_local, tiny_models, tmp_path):
    broken = tmp_path / "broken-teacher"
    shutil.copytree(tiny_models / "teacher-b", broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    raw = tiny_run_config(tiny_models, tmp_path / "runs", "broken")
    raw["teachers"][1]["model"] = str(broken)
    with pytest.raises(pipeline.StageError, match="teacher 'teacher-b'") as info:
        pipeline.run(from_dict(raw))
    assert "SafetensorError" in str(info.value) and "Traceback" not in str(info.value)
    kept = pq.read_table(tmp_path / "runs" / "broken" / "rationales" / "teacher-a")
    assert kept.num_rows == 48
