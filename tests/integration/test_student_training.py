"""The student stage on a shared local Ray: 2 workers survive an injected failure, the best checkpoint on
valid is exported with a model card; one-encoder mode trains and says how to load it. (A causal student
with accumulation and bucketing: test_pipeline.py's precomputed run.)"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from tests.helpers import tiny_run_config
from tinyllm_ray import pipeline
from tinyllm_ray.config import from_dict
from tinyllm_ray.student.faults import FAIL_AT_STEP_ENV, FAIL_MARKER_ENV

pytestmark = pytest.mark.ray


def student_run(models, out, name, **sections):
    """48 questions, the synthetic dataset's reference rationales as the one (precomputed) teacher."""
    raw = tiny_run_config(models, out, name, teachers=0, **sections)
    raw["data"]["rationales"] = "precomputed"
    raw["train"].pop("alpha")
    raw["eval"] = {**raw.get("eval", {}), "replicas": 1, "num_cpus": 0.5}
    return from_dict(raw)


@pytest.mark.slow  # about 1.5 minutes on 2 cores; one worker's restart mid-run is pinned by test_max_steps.py
def test_two_workers_survive_a_failure_and_export_the_best_checkpoint(ray_local, tiny_models, tmp_path,
                                                                      monkeypatch, capfd):
    # 48 questions / 2 workers / batch 8 = 3 steps per epoch, 2 epochs; checkpoints at steps 2, 4, 6.
    config = student_run(tiny_models, tmp_path, "ft", compare=True, train={
        "epochs": 2, "batch_size": 8, "lr": 3e-3, "num_workers": 2, "cpus_per_worker": 0.5, "checkpoint_every": 2,
        "keep_checkpoints": 1, "max_failures": 1, "log_every": 1, "alpha": {"reference": 0.5}})
    marker = tmp_path / "failed-once"
    monkeypatch.setenv(FAIL_AT_STEP_ENV, "3")  # the last worker raises once after step 3 (testing hook)
    monkeypatch.setenv(FAIL_MARKER_ENV, str(marker))
    local_checkpoints = Path(tempfile.gettempdir()).glob("tinyllm-checkpoint-*")
    before = set(local_checkpoints)
    report = pipeline.run(config)
    run_dir = tmp_path / "ft"
    # every rank's local checkpoint directory is gone once Ray Train uploaded it (or it held nothing)
    assert set(Path(tempfile.gettempdir()).glob("tinyllm-checkpoint-*")) - before == set()

    assert marker.read_text() == "failed once at step 3\n"  # the failure happened, once
    logs = "".join(capfd.readouterr())  # the workers' log lines reach the driver's stdout/stderr
    assert "resumed from checkpoint: epoch 0, step 2" in logs  # step 3 is redone, steps 1-2 are not
    s = report["student"]
    assert s["steps"] == 6
    stage = json.loads((run_dir / "student" / "_stage.json").read_text())
    assert stage["final_metrics"]["step"] == 6 and "valid_accuracy" in stage["final_metrics"]
    assert stage["best_step"] == s["exported_step"] in (2, 4, 6)
    # the exported checkpoint is the best on valid (rank classification) of those scored; of equals the later
    checkpoints = sorted((run_dir / "train" / "student").glob("checkpoint_step*"))
    assert 1 <= len(checkpoints) <= 2  # the best one, and the latest to resume from
    scored = [json.loads((c / "metrics.json").read_text()) for c in checkpoints]
    assert stage["best_valid_accuracy"] == max(m["valid_accuracy"] for m in scored)
    assert stage["checkpoint"] == f"checkpoint_step{stage['best_step']:07d}"
    # the label-only baseline trained in the same workers, restarted and resumed with them (its weights,
    # optimizer and selection so far are in every checkpoint), and its own best on valid was exported
    base = report["baselines"]["label-only"]
    assert base["steps"] == 6 and base["best_step"] in (2, 4, 6)
    best = json.loads((checkpoints[-1] / "arms" / "label-only" / "best" / "metrics.json").read_text())
    assert best["step"] == base["best_step"]
    assert best["valid_accuracy"] >= max(m["arms"]["label-only"]["valid_accuracy"] for m in scored)
    assert (run_dir / "compare" / "label-only" / "student" / "config.json").is_file()
    # the final evaluation of the export scores the same valid questions with the same scorer
    assert s["valid_accuracy_rank"] == pytest.approx(stage["best_valid_accuracy"], abs=1 / 16)

    export = run_dir / "student"
    model = AutoModelForSeq2SeqLM.from_pretrained(export)
    tokenizer = AutoTokenizer.from_pretrained(export)
    assert model.generate(**tokenizer("predict: Q: 1 + 1?", return_tensors="pt"), max_new_tokens=3).shape[0] == 1
    assert not (export / "train_state.pt").exists()
    card = (export / "README.md").read_text()
    assert f"the checkpoint of step {s['exported_step']}, best on valid" in card
    assert "reference" in card and "AutoModelForSeq2SeqLM" in card


@pytest.mark.slow  # ~45 s on 2 cores; its losses and decoding are unit-tested (test_train_steps.py), its card's
# loading code runs in test_report.py
def test_one_encoder_mode_trains_evaluates_and_says_how_to_load_it(ray_local, tiny_models, tmp_path):
    config = student_run(tiny_models, tmp_path, "one", train={"epochs": 1, "batch_size": 16, "mode": "one_encoder",
                                                             "cpus_per_worker": 1.0, "log_every": 1},
                         eval={"select_on": "generate"})
    report = pipeline.run(config)
    s = report["student"]
    assert s["mode"] == "one_encoder" and s["steps"] == 3
    assert set(report["student"]) >= {"valid_accuracy", "test_accuracy", "valid_accuracy_rank", "test_accuracy_rank"}
    card = (tmp_path / "one" / "student" / "README.md").read_text()
    assert "one-encoder mode" in card and "decoder_input_ids" in card


@pytest.mark.slow  # about 1.5 minutes on 2 cores
def test_a_driver_interrupted_in_training_stops_in_one_line_and_resumes_from_its_checkpoint(ray_local, tiny_models,
                                                                                          tmp_path):
    """Ctrl-C while the student trains: Ray Train's own SIGINT handler (which exits with no word) never runs,
    since the fit waits in a thread of its own; the driver ends in one line and the same config resumes."""
    import signal
    import time

    import yaml

    from tests.helpers import driver_until
    from tinyllm_ray import run_lock

    raw = tiny_run_config(tiny_models, tmp_path / "runs", "stopped", teachers=1,
                          train={"epochs": 8, "batch_size": 8, "checkpoint_every": 3, "alpha": {"teacher-a": 0.5}})
    raw["ray"] = {"address": ray_local.get_runtime_context().gcs_address}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "runs" / "stopped"
    checkpoints = run_dir / "train" / "student"
    driver = driver_until(tmp_path / "run.yaml", lambda: any(checkpoints.glob("checkpoint_step*")))
    sent = time.monotonic()
    driver.send_signal(signal.SIGINT)
    out, err = driver.communicate(timeout=60)
    took = time.monotonic() - sent
    assert driver.returncode == 130 and took < 30, (driver.returncode, took, err[-2000:])
    assert err.strip().splitlines()[-1].startswith("interrupted: finished stages")
    assert "Traceback" not in out + err and not (run_dir / run_lock.LOCK_FILE).exists()
    assert not (run_dir / "student").exists()  # no export from a run that did not finish
    raw.pop("ray")
    report = pipeline.run(from_dict(raw))
    assert report["student"]["steps"] == 48  # 48 questions / 8 = 6 steps an epoch, 8 epochs
    print(f"stopped {took:.1f} s after SIGINT in training; the same config resumed and finished")
