"""The loss-weight sweep on the session Ray (2 CPUs), trials one at a time:

- a killed sweep driver resumes on resubmission: the trials that had finished are not rerun, the sweep
  completes, the best checkpoint is exported and the report holds the sweep (marked slow, 93 s on the idle
  2-core machine);
- ASHA with leave-one-teacher-out on live teachers (marked slow, 146 s: run it with ``-m slow``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, tiny_run_config

pytestmark = pytest.mark.ray


def _sweep_config(models: Path, out: Path, name: str, **tune) -> dict:
    """The synthetic dataset's reference rationales as the one teacher: no teacher model runs."""
    return tiny_run_config(models, out, name, teachers=0, data={"n_train": 32, "n_valid": 16, "n_test": 16,
                                                                "rationales": "precomputed"},
                           train={"epochs": 2, "batch_size": 16, "lr": 1e-3, "log_every": 10, "alpha": {}},
                           tune={"max_concurrent_trials": 1, **tune})


def _terminated(sweep_dir: Path) -> set[str]:
    """Trial ids that Tune's saved experiment state marks finished."""
    done = set()
    for state in sweep_dir.glob("experiment_state-*.json"):
        try:
            trials = json.loads(state.read_text())["trial_data"]
        except (OSError, ValueError, KeyError):
            continue
        for meta, _ in trials:
            meta = json.loads(meta)
            if meta.get("status") == "TERMINATED":
                done.add(meta["trial_id"])
    return done


def _checkpoint_files(run_dir: Path, trial_id: str) -> dict[str, float]:
    train = run_dir / "tune" / "trials" / trial_id / "train"
    return {str(p.relative_to(train)): p.stat().st_mtime for p in train.rglob("checkpoint_step*/*")}


@pytest.mark.slow  # about 2 minutes on 2 cores: a sweep, killed, resumed; the sweep's units are tested by default
def test_a_killed_sweep_resumes_without_rerunning_finished_trials(ray_local, tiny_models, tmp_path):
    from tinyllm_ray import pipeline
    from tinyllm_ray.config import from_dict

    raw = _sweep_config(tiny_models, tmp_path / "runs", "sweep", gamma=[0.5, 1.0], scheduler="none")
    raw["ray"] = {"address": ray_local.get_runtime_context().gcs_address}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "runs" / "sweep"
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen([sys.executable, str(REPO / "jobs" / "distill.py"), "--config",
                               str(tmp_path / "run.yaml")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 400
    while driver.poll() is None and not _terminated(run_dir / "tune" / "sweep") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert driver.poll() is None, "the driver ended before it could be killed:\n" + \
        (tmp_path / "driver.log").read_text()[-3000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = _terminated(run_dir / "tune" / "sweep")
    assert len(finished) == 1, finished
    before = {t: _checkpoint_files(run_dir, t) for t in finished}
    assert all(before.values())

    raw.pop("ray")
    report = pipeline.run(from_dict(raw))
    tune = report["tune"]
    assert len(tune["trials"]) == 2 and all(t["status"] == "completed" for t in tune["trials"])
    assert {t["trial_id"] for t in tune["trials"]} >= finished
    # the finished trial's Train run was not touched again: same checkpoints, same files
    assert {t: _checkpoint_files(run_dir, t) for t in finished} == before
    best = tune["best"]
    assert best["valid_accuracy"] == max(t["valid_accuracy"] for t in tune["trials"])
    assert report["student"]["loss_weights"]["answer"] == best["point"]["gamma"]
    assert (run_dir / "student" / "config.json").is_file() and (run_dir / "tune_valid_accuracy.png").is_file()
    markdown = (run_dir / "report.md").read_text()
    assert "## Loss-weight sweep" in markdown and "(tune_valid_accuracy.png)" in markdown
    assert json.loads((run_dir / "report.json").read_text())["tune"]["best"] == best


@pytest.mark.slow
def test_asha_with_leave_one_teacher_out_on_live_teachers(ray_local, tiny_models, tmp_path):
    from tinyllm_ray import pipeline
    from tinyllm_ray.config import from_dict

    raw = tiny_run_config(tiny_models, tmp_path / "runs", "asha", teachers=2,
                          train={"epochs": 3, "alpha": {"teacher-a": 0.5, "teacher-b": 0.5}},
                          tune={"gamma": [0.5, 1.0], "leave_one_teacher_out": True, "max_concurrent_trials": 1,
                                "grace_period": 1, "reduction_factor": 2})
    report = pipeline.run(from_dict(raw))
    tune = report["tune"]
    points = [t["point"] for t in tune["trials"]]
    assert {"gamma": 1.0, "alpha.teacher-a": 0.0, "alpha.teacher-b": 0.5} in points
    assert {"gamma": 1.0, "alpha.teacher-a": 0.5, "alpha.teacher-b": 0.0} in points
    assert len(points) == 4  # the grid's (1.0, 0.5, 0.5) is also the leave-one-out reference
    # each status says how far its trial went; the scheduler's stopping itself is pinned by
    # tests/unit/test_sweep_space.py::test_asha_stops_the_weaker_trials_at_the_first_rung
    per_trial = tune["evaluations_per_trial"]
    for trial in tune["trials"]:
        assert (trial["status"] == "completed") == (trial["evaluations"] == per_trial), trial
        if trial["status"] == "stopped early":
            assert 1 <= trial["evaluations"] < per_trial, trial
    assert tune["evaluations_total"] == sum(t["evaluations"] for t in tune["trials"])
    # live teachers in a fresh run dir, generating now: a rationale per training question and (they also answer
    # by themselves) an answer per valid and test question
    d = report["dataset"]
    expected = d["train"] + d["valid"] + d["test"]
    assert d["train"] > 0 and [t["generated_now"] for t in report["teachers"]] == [expected, expected]
