"""Experiment tracking (``tinyllm_ray/tracking.py``): TensorBoard event files written and read back, the driver's
``log_scalars``, the ``tracking`` config section (its checks, and that it never changes a stage key), MLflow
runs in a local file store (params, metrics, a resumed run continuing its MLflow run, a sweep trial's run
opened by Ray's ``MLflowLoggerCallback``), and (``-m slow``) small real training runs with a baseline arm."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from tests.helpers import tiny_run_config
from tinyllm_ray import tracking
from tinyllm_ray.config import ConfigError, from_dict, validate
from tinyllm_ray.config.loading import with_absolute_paths
from tinyllm_ray.sweep import trial_tracking

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
needs_mlflow = pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow is not installed (pip install mlflow-skinny)")


def config(tmp_path: Path, **sections):
    raw = tiny_run_config(tmp_path / "models", tmp_path / "runs", "track", teachers=0, **sections)
    raw["data"]["rationales"] = "precomputed"  # the synthetic dataset's reference rationales: teacher "reference"
    raw["train"]["alpha"] = {"reference": 0.5}
    return from_dict(raw)


@pytest.fixture
def mlflow_env(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no network in tests
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def test_log_scalars_writes_event_files_the_reader_reads_back(tmp_path):
    run = tmp_path / "run"
    tracking.log_scalars(run, "teachers", 1, {"teacher/accepted": 10, "teacher/rationales_per_second": 2.5})
    tracking.log_scalars(run, "teachers", 2, {"teacher/accepted": 12})
    tracking.log_scalars(run, "teachers", 3, {"teacher/accepted": 20})
    # flushed at every call: readable while the writer is still open
    scalars = tracking.read_scalars(run / "tensorboard" / "teachers")
    assert scalars == {"teacher/accepted": [(1, 10.0), (2, 12.0), (3, 20.0)],
                       "teacher/rationales_per_second": [(1, 2.5)]}
    tracking.close_scalars()
    for bad in ("", "a/b", ".."):
        with pytest.raises(ValueError, match="group"):
            tracking.log_scalars(run, bad, 1, {"x": 1})


def test_train_logger_writes_one_run_per_arm_and_a_resume_replaces_the_redone_steps(tmp_path):
    where = tmp_path / "tensorboard"
    first = tracking.TrainLogger(tracking.Tracking(str(where)), ["student", "label-only"])
    for step in (1, 2, 3, 4):
        first.scalars("student", step, {tracking.LOSS: 10.0 - step, tracking.task_loss("answer"): 1.0})
        first.scalars("label-only", step, {tracking.LOSS: 20.0 - step})
    first.close(failed=True)  # the worker group fails after step 4; its checkpoint is at step 2
    again = tracking.TrainLogger(tracking.Tracking(str(where)), ["student", "label-only"], start_step=2)
    for step in (3, 4, 5):
        again.scalars("student", step, {tracking.LOSS: 100.0 + step})
    again.close()
    student = tracking.read_scalars(where / "student")
    assert student[tracking.LOSS] == [(1, 9.0), (2, 8.0), (3, 103.0), (4, 104.0), (5, 105.0)]
    assert student[tracking.task_loss("answer")] == [(1, 1.0), (2, 1.0)]  # not logged again after the resume
    assert tracking.read_scalars(where / "label-only")[tracking.LOSS] == [(1, 19.0), (2, 18.0)]


def test_tracking_section_defaults_and_its_checks(tmp_path, monkeypatch):
    c = config(tmp_path)
    assert c.tracking.tensorboard is True and c.tracking.mlflow is None
    t = tracking.for_run(c, tmp_path / "runs" / "track")
    assert t.tensorboard_dir == str((tmp_path / "runs" / "track" / "tensorboard").resolve()) and t.mlflow is None
    off = config(tmp_path, tracking={"tensorboard": False})
    assert tracking.for_run(off, tmp_path) == tracking.Tracking(None, None)
    with pytest.raises(ConfigError, match="tracking.mlflow.experimnt: unknown key"):
        config(tmp_path, tracking={"mlflow": {"experimnt": "x"}})

    on = config(tmp_path, tracking={"mlflow": {"experiment": "e", "tags": {"team": "a"}}})
    target = tracking.for_run(on, tmp_path / "runs" / "track").mlflow
    assert target.tracking_uri == (tmp_path / "runs" / "track" / "mlruns").resolve().as_uri()
    assert target.run_name == "track" and target.tags == {"team": "a"}
    assert target.params["loss_weight.answer"] == 1.0 and target.params["loss_weight.reference"] == 0.5
    assert target.params["teachers"] == "reference" and target.params["train.lr"] == 1e-3

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("mlflow", "tensorboardX") else real_find_spec(name, *a))
    with pytest.raises(ConfigError) as err:
        validate(on, check_paths=False)
    assert "tracking.mlflow: MLflow is not installed; pip install 'tinyllm-ray[tracking]'" in str(err.value)
    assert "tracking.tensorboard: tensorboardX is not installed" in str(err.value)
    validate(config(tmp_path, tracking={"tensorboard": False}), check_paths=False)  # neither asked for: fine


def test_tracking_settings_never_change_a_stage_key(tmp_path):
    from tinyllm_ray.keys import student_key, sweep_key

    plain = config(tmp_path)
    tracked = config(tmp_path, tracking={"tensorboard": False, "mlflow": {"tracking_uri": "http://mlflow:5000"}})
    assert student_key(plain) == student_key(tracked)
    swept = {"tune": {"gamma": [0.5, 1.0]}}
    assert sweep_key(config(tmp_path, **swept)) == sweep_key(config(tmp_path, tracking={"tensorboard": False},
                                                                    **swept))


def test_a_run_resumed_with_other_tracking_settings_is_the_same_run(tmp_path):
    from tinyllm_ray import runs

    plain = config(tmp_path).to_dict()
    tracked = config(tmp_path, tracking={"mlflow": {"experiment": "e"}}).to_dict()
    assert runs.result_fields(plain) == runs.result_fields(tracked)


@needs_mlflow
def test_mlflow_run_records_params_and_metrics_and_a_resume_continues_it(tmp_path, mlflow_env):
    import mlflow

    c = config(tmp_path, tracking={"tensorboard": False, "mlflow": {"experiment": "unit"}})
    run_dir = tmp_path / "runs" / "track"
    t = tracking.for_run(c, run_dir)
    first = tracking.TrainLogger(t, ["student", "label-only"])
    first.scalars("student", 1, {tracking.LOSS: 2.0, tracking.LR: 1e-3})
    first.scalars("label-only", 1, {tracking.LOSS: 3.0})
    first.scalars("student", 2, {tracking.VALID_ACCURACY: 0.25})
    first.close(failed=True)
    again = tracking.TrainLogger(t, ["student", "label-only"], start_step=2)  # resumes: the same MLflow run
    again.scalars("student", 3, {tracking.LOSS: 1.5})
    again.close()

    client = mlflow.MlflowClient(t.mlflow.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("unit").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "track"
    assert run.data.params["student.model"] == c.student.model and run.data.params["loss_weight.reference"] == "0.5"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, tracking.LOSS)] == [(1, 2.0),
                                                                                                       (3, 1.5)]
    assert client.get_metric_history(run.info.run_id, "label-only/" + tracking.LOSS)[0].value == 3.0
    assert run.data.metrics[tracking.VALID_ACCURACY] == 0.25


@needs_mlflow
def test_a_sweep_trial_logs_into_the_run_rays_mlflow_callback_opened(tmp_path, mlflow_env):
    import mlflow

    c = config(tmp_path, tune={"gamma": [0.5, 1.0]}, tracking={"mlflow": {"experiment": "sweep"}})
    run_dir = tmp_path / "runs" / "track"

    @dataclasses.dataclass(eq=False)
    class FakeTrial:  # what MLflowLoggerCallback reads of a Tune trial
        config: dict
        name: str

        def __str__(self) -> str:
            return self.name

    import ray.cloudpickle

    callback = trial_tracking.sweep_callbacks(c, run_dir)[0]
    callback = ray.cloudpickle.loads(ray.cloudpickle.dumps(callback))  # as Tune saves and restores it
    callback.setup()
    trial = FakeTrial({"point": {"gamma": 0.5}}, "run_trial_abcde_00000")
    callback.log_trial_start(trial)
    callback.log_trial_result(1, trial, {"valid_accuracy": 0.5, "training_iteration": 1, "placement_group": "x"})
    from tinyllm_ray.sweep import apply_point

    t = tracking.for_trial(apply_point(c, {"gamma": 0.5}), run_dir, tmp_path / "trial", str(trial))
    worker = tracking.TrainLogger(t, ["student"])
    worker.scalars("student", 1, {tracking.LOSS: 4.0})
    worker.close()
    callback.log_trial_end(trial)

    client = mlflow.MlflowClient(t.mlflow.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert len(runs) == 1  # the worker found the trial's run
    run = runs[0]
    assert run.data.metrics == {"valid_accuracy": 0.5, "training_iteration": 1.0, tracking.LOSS: 4.0}
    assert run.data.params["point/gamma"] == "0.5" and run.data.params["loss_weight.answer"] == "0.5"
    assert run.info.status == "FINISHED"


def train_small(tiny_models: Path, tmp_path: Path, track: dict) -> tuple[dict, Path]:
    """A real Ray Train run, as small as it gets: 32 questions, batch 16 = 2 steps, logged every step, one
    evaluation (the epoch's checkpoint) on 4 valid questions; the student and a label-only baseline."""
    from tinyllm_ray.data.synthetic import generate
    from tinyllm_ray.student.batches import example_table
    from tinyllm_ray.student.train import train_student

    raw = tiny_run_config(tiny_models, tmp_path / "runs", "small", teachers=0, tracking=track,
                          train={"batch_size": 16, "log_every": 1, "cpus_per_worker": 1.0,
                                 "alpha": {"reference": 0.5}})
    raw["data"]["rationales"] = "precomputed"
    raw["eval"] = {"max_valid": 4}
    c = with_absolute_paths(from_dict(raw))
    splits = generate(32, 4, 1, seed=1)
    examples = example_table(splits["train"], {"reference": {q.id: q.reference_rationale for q in splits["train"]}})
    label_only = dataclasses.replace(c, train=dataclasses.replace(c.train, alpha={"reference": 0.0}))
    run_dir = tmp_path / "runs" / "small"
    result = train_student(examples, c, run_dir, valid=splits["valid"], arms={"label-only": label_only})
    assert result["steps"] == 2
    return result, run_dir


@pytest.mark.ray
@pytest.mark.slow  # ~50 s on 2 cores (one Ray Train run); by default test_pipeline.py's first run, which trains with
# compare: true, checks the event files of a real run
def test_a_training_run_writes_tensorboard_files_for_the_student_and_a_baseline(ray_local, tiny_models, tmp_path):
    result, run_dir = train_small(tiny_models, tmp_path, {})
    student = tracking.read_scalars(run_dir / "tensorboard" / "student")
    tags = {tracking.LOSS, tracking.LR, tracking.SAMPLES_PER_SECOND, tracking.task_loss("answer"),
            tracking.task_loss("reference"), tracking.VALID_ACCURACY}
    assert set(student) == tags
    assert all([s for s, _ in student[tag]] == [1, 2] for tag in tags - {tracking.VALID_ACCURACY})
    assert student[tracking.VALID_ACCURACY] == [(2, result["best_metrics"]["valid_accuracy"])]
    assert student[tracking.LOSS][-1][1] == pytest.approx(result["metrics"]["loss"], rel=1e-6)  # the last report's
    baseline = tracking.read_scalars(run_dir / "tensorboard" / "label-only")
    assert set(baseline) == {tracking.LOSS, tracking.LR, tracking.task_loss("answer"), tracking.VALID_ACCURACY}
    assert [s for s, _ in baseline[tracking.LOSS]] == [1, 2]
    assert baseline[tracking.VALID_ACCURACY] == [(2, result["arms"]["label-only"]["best_metrics"]["valid_accuracy"])]
    assert not (run_dir / "mlruns").exists()


@pytest.mark.ray
@pytest.mark.slow  # ~50 s on 2 cores; MLflow's side is tested above without Ray, the Train worker's wiring here
@needs_mlflow
def test_a_training_run_records_params_and_metrics_in_mlflow(ray_local, tiny_models, tmp_path, mlflow_env):
    import mlflow

    result, run_dir = train_small(tiny_models, tmp_path, {"tensorboard": False, "mlflow": {"experiment": "it"}})
    assert not (run_dir / "tensorboard").exists()
    uri = (run_dir / "mlruns").as_uri()
    tracking.allow_file_store(uri)  # MLflow 3 reads its file store only with MLFLOW_ALLOW_FILE_STORE=true
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("it").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "small"
    assert run.data.params["loss_weight.reference"] == "0.5" and run.data.params["train.batch_size"] == "16"
    assert [m.step for m in client.get_metric_history(run.info.run_id, tracking.LOSS)] == [1, 2]
    assert run.data.metrics[tracking.VALID_ACCURACY] == result["best_metrics"]["valid_accuracy"]
    assert run.data.metrics["label-only/" + tracking.VALID_ACCURACY] == (
        result["arms"]["label-only"]["best_metrics"]["valid_accuracy"])
