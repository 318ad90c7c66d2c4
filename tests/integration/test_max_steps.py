"""``train.max_steps`` in the real training loop: exactly that many steps, ending mid-epoch, also when the worker
group restarts from a checkpoint in the last, partial epoch."""

from __future__ import annotations

import json

import pytest

from tests.helpers import tiny_run_config
from tinyllm_ray import pipeline
from tinyllm_ray.config import from_dict
from tinyllm_ray.student.faults import FAIL_AT_STEP_ENV, FAIL_MARKER_ENV

pytestmark = pytest.mark.ray


@pytest.mark.slow  # two Ray Train runs with a restart: ~75 s on 2 cores (the schedule's step counting is unit-tested)
def test_max_steps_stops_mid_epoch_and_survives_a_restart_in_the_last_epoch(ray_local, tiny_models, tmp_path,
                                                                            monkeypatch, capfd):
    # 48 questions / batch 8 = 6 micro-batches, 2 per step: 3 steps per epoch. max_steps 5 = one epoch and
    # two steps of the second (epochs: 1 is ignored); checkpoints at steps 2, 4 and 5 (the last).
    raw = tiny_run_config(tiny_models, tmp_path, "steps", teachers=0,
                          train={"epochs": 1, "max_steps": 5, "batch_size": 8, "grad_accum_steps": 2, "lr": 1e-3,
                                 "checkpoint_every": 2, "max_failures": 1, "log_every": 1, "cpus_per_worker": 1.0})
    raw["data"]["rationales"] = "precomputed"
    raw["train"].pop("alpha")
    raw["eval"] = {"replicas": 1, "num_cpus": 0.5, "max_valid": 8}
    marker = tmp_path / "failed-once"
    monkeypatch.setenv(FAIL_AT_STEP_ENV, "5")  # raises after step 5, before its checkpoint: back to step 4
    monkeypatch.setenv(FAIL_MARKER_ENV, str(marker))
    report = pipeline.run(from_dict(raw))

    assert marker.read_text() == "failed once at step 5\n"
    logs = "".join(capfd.readouterr())
    assert "resumed from checkpoint: epoch 1, step 4 (skipping the 2 micro-batches" in logs
    assert report["student"]["steps"] == 5
    stage = json.loads((tmp_path / "steps" / "student" / "_stage.json").read_text())
    assert stage["final_metrics"]["step"] == 5 and stage["final_metrics"]["epoch"] == 1
    assert "step 6 |" not in logs  # nothing trained past max_steps
    checkpoints = sorted(p.name for p in (tmp_path / "steps" / "train" / "student").glob("checkpoint_step*"))
    assert "checkpoint_step0000005" in checkpoints  # the last step is always checkpointed


@pytest.mark.slow  # two Ray Train runs: ~90 s on 2 cores (the checks: test_arms.py, test_checkpoints.py)
def test_a_damaged_latest_checkpoint_is_skipped_and_training_resumes_from_the_one_before(ray_local, tiny_models,
                                                                                        tmp_path, capfd):
    import shutil

    from tinyllm_ray.student.arms import checkpoint_problem

    raw = tiny_run_config(tiny_models, tmp_path, "damaged", teachers=0,
                          train={"epochs": 1, "max_steps": 4, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 2,
                                 "log_every": 1, "cpus_per_worker": 1.0})
    raw["data"]["rationales"] = "precomputed"
    raw["train"].pop("alpha")
    raw["eval"] = {"replicas": 1, "num_cpus": 0.5, "max_valid": 8}
    pipeline.run(from_dict(raw))
    run = tmp_path / "damaged"
    latest = run / "train" / "student" / "checkpoint_step0000004"
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short, as a full disk or a killed copy leaves it
    shutil.rmtree(run / "student")  # the export (ours): the next run trains again, resuming
    capfd.readouterr()
    report = pipeline.run(from_dict(raw))
    logs = "".join(capfd.readouterr())
    assert "checkpoint_step0000004 does not load" in logs and str(weights) in logs
    assert "resumed from checkpoint: epoch 0, step 2" in logs  # the one before it
    assert report["student"]["steps"] == 4
    assert checkpoint_problem(run / "student", state=False) is None  # the export loads
    assert checkpoint_problem(latest) is None  # step 4 was trained again and its checkpoint written anew
