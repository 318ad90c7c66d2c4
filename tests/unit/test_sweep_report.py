"""The sweep's results (``tinyllm_ray.sweep.report``): the best trial, the report section and table, the
plot. No Ray cluster."""

from __future__ import annotations

import pytest

from tests.unit.test_sweep_space import make
from tinyllm_ray.report import render_markdown, tune_markdown
from tinyllm_ray.sweep.report import best_trial, plot, sweep_report

TRIALS = [
    {"trial_id": "abc_00000", "point": {"gamma": 0.5, "alpha.a": 0.5}, "valid_accuracy": 0.25, "evaluations": 1,
     "steps": 3, "status": "stopped early", "error": None, "checkpoint": "/x/c3", "best_step": 3,
     "checkpoint_valid_accuracy": 0.25},
    {"trial_id": "abc_00001", "point": {"gamma": 1.0, "alpha.a": 0.5}, "valid_accuracy": 0.5, "evaluations": 3,
     "steps": 9, "status": "completed", "error": None, "checkpoint": "/x/c6", "best_step": 6,
     "checkpoint_valid_accuracy": 0.5},
    {"trial_id": "abc_00002", "point": {"gamma": 1.0, "alpha.a": 0.0}, "valid_accuracy": None, "evaluations": 0,
     "steps": 0, "status": "error", "error": "RuntimeError: boom", "checkpoint": None, "best_step": None,
     "checkpoint_valid_accuracy": None},
]


def test_best_trial_is_the_best_kept_checkpoint():
    best = best_trial(TRIALS)
    assert best["trial_id"] == "abc_00001" and best["valid_accuracy"] == 0.5 and best["best_step"] == 6
    assert best_trial([TRIALS[2]]) is None


def test_report_section_and_table():
    config = make({"gamma": [0.5, 1.0], "leave_one_teacher_out": True}, teachers=("a",))
    section = sweep_report(TRIALS, best_trial(TRIALS), config, max_t=3, concurrent=1)
    assert section["evaluations_total"] == 4 and section["swept"] == ["gamma", "leave_one_teacher_out"]
    assert [t["status"] for t in section["trials"]] == ["stopped early", "completed", "error"]
    assert section["best"] == {"trial_id": "abc_00001", "point": {"gamma": 1.0, "alpha.a": 0.5},
                               "valid_accuracy": 0.5, "step": 6}
    section["plot"] = "tune_valid_accuracy.png"
    lines = tune_markdown(section)
    assert "| trial | gamma | alpha.a | valid accuracy | evaluations | steps | status |" in lines
    assert "| **abc_00001** | 1.000 | 0.500 | 0.500 | 3 | 9 | completed |" in lines
    assert "| abc_00002 | 1.000 | 0.000 | n/a | 0 | 0 | error |" in lines
    assert lines[-1] == "![valid accuracy against the loss weights](tune_valid_accuracy.png)"
    report = {"run_name": "r", "dataset": {"name": "synthetic", "train": 1, "valid": 1, "test": 1},
              "teachers": [], "timings": {"total_s": 1.0}, "tune": section,
              "student": {"model": "m", "loss_weights": {"answer": 1.0}, "valid_accuracy": 0.5, "test_accuracy": 0.5,
                          "valid_accuracy_rank": 0.5, "test_accuracy_rank": 0.5, "steps": 9, "seconds": 1.0}}
    assert "## Loss-weight sweep" in render_markdown(report)


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    plot(TRIALS, best_trial(TRIALS), tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
