"""Experiment tracking: TensorBoard event files of every training run, and optionally MLflow (``tracking:``).

What the student's training records (rank 0 of its Ray Train workers, ``TrainLogger``), per arm (the student,
and with ``compare: true`` each baseline, ``student/arms.py``):

- every ``train.log_every`` steps: ``train/loss`` (the weighted multi-task loss), ``train/loss_<task>`` (each
  task's: ``answer`` and one per teacher), ``train/lr``, and for the student ``train/samples_per_second``
  (all workers);
- at every evaluation: ``valid/accuracy`` (``eval.select_on``'s scorer).

TensorBoard (``tracking.tensorboard``, on by default; ``tensorboardX``, a dependency of Ray Tune): one event
directory per arm under ``<run>/tensorboard/<arm>/`` (``student``, ``label-only``, ``only-<teacher>``), so
``tensorboard --logdir runs/<name>/tensorboard`` overlays the arms' curves. A sweep's trial writes its
training scalars under ``<run>/tune/trials/<trial id>/tensorboard/student/`` (beside its Ray Train run); Ray
Tune's own TBX files (every report: ``ray/tune/valid_accuracy``, ...) are in ``<run>/tune/sweep/<trial dir>/``,
so ``tensorboard --logdir runs/<name>/tune`` shows both. A worker group that resumes from a checkpoint at step
s opens its event files with TensorBoard's purge step s + 1, so the steps it redoes replace the first try's.

MLflow (``tracking.mlflow``; ``pip install 'tinyllm-ray[tracking]'``): one MLflow run per training run, opened
with Ray's ``setup_mlflow`` in rank 0's worker, with the run's parameters (``run_params``: loss weights, lr,
batch size, student model, teachers, ...) and the same metrics (a baseline's prefixed ``<arm>/``). A resumed
training run continues its MLflow run (found by its ``tinyllm_run`` tag). In a sweep Ray's
``MLflowLoggerCallback`` (``SweepMlflow``) opens one MLflow run per trial on the driver, with the trial's
parameters and every Tune report; the trial's Train worker adds its per-step metrics to that same run.
A ``file://`` tracking URI (the default: ``<run>/mlruns``) is MLflow's file store, which MLflow 3 refuses
unless ``MLFLOW_ALLOW_FILE_STORE`` is true: this module sets it (unless set) for such URIs.

Others (the driver: teacher throughput, acceptance) add scalars of their own with ``log_scalars(run_dir,
group, step, {name: value})``: they appear in TensorBoard as run ``<group>`` beside the arms.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import logging
import os
import struct
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tinyllm_ray.config.schema import Config

log = logging.getLogger("tinyllm_ray.tracking")

TB_DIR = "tensorboard"  # <run>/tensorboard/<group>/ (a sweep trial's: <run>/tune/trials/<id>/tensorboard/)
MLFLOW_DIR = "mlruns"  # the default MLflow file store: <run>/mlruns
RUN_TAG = "tinyllm_run"  # on every MLflow run: a hash of the run (trial) directory, to find it again
TRIAL_TAG = "trial_name"  # set by Ray's MLflowLoggerCallback on a trial's MLflow run

# Tags (TensorBoard) and metric names (MLflow) of the training loop.
LOSS = "train/loss"
LR = "train/lr"
SAMPLES_PER_SECOND = "train/samples_per_second"
VALID_ACCURACY = "valid/accuracy"


def task_loss(task: str) -> str:
    """The tag of one task's loss: ``train/loss_answer``, ``train/loss_<teacher>``."""
    return f"train/loss_{task}"


# -- settings ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MlflowTarget:
    """The MLflow run of one training run: where, under which name, with which parameters."""

    tracking_uri: str
    experiment: str
    run_name: str
    run_tag: str  # RUN_TAG's value: finds the run again when training resumes
    params: dict[str, Any]
    tags: dict[str, str]
    trial_name: str | None = None  # a sweep trial: add to the run Ray's MLflowLoggerCallback opened for it


@dataclasses.dataclass(frozen=True)
class Tracking:
    """Where one Ray Train run's rank 0 records (rides in the loop config: plain, picklable data).
    ``tensorboard_dir``: event directories ``<dir>/<arm>/``; ``None``: no event files."""

    tensorboard_dir: str | None = None
    mlflow: MlflowTarget | None = None


def run_params(config: Config) -> dict[str, Any]:
    """The MLflow parameters of a training run: what distinguishes it from another one of the project."""
    c, t = config, config.train
    params: dict[str, Any] = {
        "student.model": c.student.model,
        "teachers": ",".join(c.teacher_names()) or "none",
        **{f"teacher.{x.name}.model": x.model for x in c.teachers},
        **{f"loss_weight.{task}": w for task, w in c.task_weights().items()},
        "train.lr": t.lr, "train.batch_size": t.batch_size, "train.grad_accum_steps": t.grad_accum_steps,
        "train.num_workers": t.num_workers, "train.epochs": t.epochs, "train.max_steps": t.max_steps,
        "train.warmup_steps": t.warmup_steps, "train.weight_decay": t.weight_decay, "train.mode": t.mode,
        "train.seed": t.seed, "data.dataset": c.data.dataset, "eval.select_on": c.eval.select_on,
        "compare": c.compare,
    }
    return params


def run_tag(directory: Path) -> str:
    return hashlib.sha256(str(Path(directory).resolve()).encode()).hexdigest()[:16]


def mlflow_uri(config: Config, run_dir: Path) -> str:
    """``tracking.mlflow.tracking_uri``, or the file store ``<run>/mlruns``."""
    settings = config.tracking.mlflow
    if settings is not None and settings.tracking_uri:
        return settings.tracking_uri
    return (Path(run_dir).resolve() / MLFLOW_DIR).as_uri()


def allow_file_store(uri: str) -> None:
    """MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE`` is true: a ``file:`` URI (or a plain
    path) in the config asks for it, so allow it in this process (an explicit setting is left alone)."""
    if "://" not in uri or uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def for_run(config: Config, run_dir: Path) -> Tracking:
    """The tracking of a single training run in ``run_dir``."""
    tb = str(Path(run_dir).resolve() / TB_DIR) if config.tracking.tensorboard else None
    settings = config.tracking.mlflow
    return Tracking(tb, _target(config, run_dir, (settings.run_name if settings else None) or Path(run_dir).name))


def for_trial(config: Config, run_dir: Path, trial_dir: Path, trial_name: str) -> Tracking:
    """The tracking of one sweep trial (``config``: the trial's) whose Train run lives in ``trial_dir``."""
    tb = str(Path(trial_dir).resolve() / TB_DIR) if config.tracking.tensorboard else None
    target = _target(config, run_dir, trial_name)
    return Tracking(tb, dataclasses.replace(target, trial_name=trial_name) if target else None)


def _target(config: Config, run_dir: Path, name: str) -> MlflowTarget | None:
    settings = config.tracking.mlflow
    if settings is None:
        return None
    return MlflowTarget(mlflow_uri(config, run_dir), settings.experiment, name, run_tag(run_dir),
                        run_params(config), dict(settings.tags))


# -- the training loop's logger (rank 0) ---------------------------------------------------------------


class EventFile:
    """One TensorBoard event file in ``logdir``, written in line with tensorboardX's ``EventsWriter`` (its
    ``SummaryWriter`` queues events for a thread, and its ``flush`` does not wait for the queue: here every
    ``add_scalars`` is on disk when it returns). ``purge_step``: TensorBoard drops the points at that step and
    later of the directory's earlier files (the steps a resumed run redoes)."""

    def __init__(self, logdir: Path | str, purge_step: int | None = None):
        from tensorboardX.event_file_writer import EventsWriter

        Path(logdir).mkdir(parents=True, exist_ok=True)
        # Named events.out.tfevents.<second>.<host><suffix>: the suffix keeps two files of one second apart (a
        # restarted worker, a test) and in the order they were opened.
        self._writer = EventsWriter(str(Path(logdir) / "events"), f".{time.time_ns()}.{os.getpid()}")
        if purge_step is not None:
            from tensorboardX.proto.event_pb2 import Event, SessionLog

            self._writer.write_event(Event(wall_time=time.time(), step=purge_step,
                                           session_log=SessionLog(status=SessionLog.START)))

    def add_scalars(self, step: int, values: dict[str, float]) -> None:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
        self._writer.write_event(Event(wall_time=time.time(), step=step, summary=summary))
        self._writer.flush()  # a few bytes per logged step: on disk at once, also when the worker dies

    def close(self) -> None:
        self._writer.close()


class TrainLogger:
    """Rank 0's recorder of one Train run: TensorBoard writers per arm, the MLflow run. ``start_step``: the
    step the run starts (resumes) from. Failures to reach MLflow after it opened are logged, not raised:
    tracking never stops a training run."""

    def __init__(self, tracking: Tracking, arms: Iterable[str], start_step: int = 0):
        self.arms = list(arms)
        self.student = self.arms[0]
        self.writers: dict[str, Any] = {}
        if tracking.tensorboard_dir:
            purge = start_step + 1 if start_step else None  # the redone steps replace the first try's
            self.writers = {arm: EventFile(Path(tracking.tensorboard_dir) / arm, purge) for arm in self.arms}
        self.mlflow = _MlflowRun(tracking.mlflow, start_step) if tracking.mlflow else None

    def scalars(self, arm: str, step: int, values: dict[str, float]) -> None:
        """Record ``values`` (tag -> number) of ``arm`` at ``step``."""
        writer = self.writers.get(arm)
        if writer is not None:
            writer.add_scalars(step, values)
        if self.mlflow is not None:
            prefix = "" if arm == self.student else f"{arm}/"
            self.mlflow.log({prefix + tag: float(v) for tag, v in values.items()}, step)

    def close(self, failed: bool = False) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}
        if self.mlflow is not None:
            self.mlflow.close(failed)
            self.mlflow = None


class _MlflowRun:
    """The MLflow run a Train worker logs to: the sweep trial's (opened by ``SweepMlflow`` on the driver), the
    run this training run logged to before it resumed, or a new one from Ray's ``setup_mlflow``."""

    def __init__(self, target: MlflowTarget, start_step: int):
        allow_file_store(target.tracking_uri)
        import mlflow

        self.client = mlflow.MlflowClient(target.tracking_uri)
        trial = {TRIAL_TAG: target.trial_name} if target.trial_name is not None else {}
        # A sweep trial's run (opened by ``SweepMlflow``; Tune's callback ends it), or the run this training
        # run logged to before it resumed.
        self.run_id = self._find(target, trial) if trial or start_step else None
        self.owned = not trial or self.run_id is None  # ended (FINISHED/FAILED) here
        self.active = None
        if self.run_id is None:
            from ray.air.integrations.mlflow import setup_mlflow

            self.active = setup_mlflow(config=target.params, tracking_uri=target.tracking_uri,
                                       experiment_name=target.experiment, run_name=target.run_name,
                                       tags={**target.tags, RUN_TAG: target.run_tag, **trial},
                                       create_experiment_if_not_exists=True, rank_zero_only=False)
            self.run_id = self.active.active_run().info.run_id
        elif self.owned:
            self.client.update_run(self.run_id, status="RUNNING")
        log.info("MLflow: logging to run %s of experiment %r at %s", self.run_id, target.experiment,
                 target.tracking_uri)
        self.failed_once = False

    def _find(self, target: MlflowTarget, tags: dict[str, str]) -> str | None:
        experiment = self.client.get_experiment_by_name(target.experiment)
        if experiment is None:
            return None
        where = " and ".join(f"tags.{k} = '{v}'" for k, v in {RUN_TAG: target.run_tag, **tags}.items())
        found = self.client.search_runs([experiment.experiment_id], filter_string=where,
                                        order_by=["attributes.start_time DESC"], max_results=1)
        return found[0].info.run_id if found else None

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        try:
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])
        except Exception as err:  # noqa: BLE001 - a tracking server's trouble must not stop the training
            if not self.failed_once:
                log.warning("MLflow: could not log step %d to run %s (%s); training goes on", step, self.run_id,
                            err)
                self.failed_once = True

    def close(self, failed: bool) -> None:
        if not self.owned:
            return
        status = "FAILED" if failed else "FINISHED"
        try:
            if self.active is not None:
                self.active.end_run(status=status)
            else:
                self.client.set_terminated(self.run_id, status=status)
        except Exception as err:  # noqa: BLE001 - as in ``log``
            log.warning("MLflow: could not close run %s (%s)", self.run_id, err)


# -- sweeps ------------------------------------------------------------------------------------------


# -- driver-side scalars -------------------------------------------------------------------------------

_writers: dict[Path, Any] = {}
_writers_lock = threading.Lock()


def log_scalars(run_dir: Path, group: str, step: int, values: dict[str, float]) -> None:
    """Record scalars from the driver (or any one process) in TensorBoard: ``values`` (tag -> number, tags such
    as ``teacher/rationales_per_second``) at ``step`` in ``<run>/tensorboard/<group>/``, a run of its own in
    TensorBoard beside the training arms (``group``: e.g. ``teachers``; not an arm's name). The file stays open
    for the process's later calls (closed at exit or by ``close_scalars``); every call is on disk when it returns.
    Honours no config: call it only when ``config.tracking.tensorboard`` is on."""
    if not group or "/" in group or group in (".", ".."):
        raise ValueError(f"log_scalars: group must be one directory name, got {group!r}")
    where = Path(run_dir).resolve() / TB_DIR / group
    with _writers_lock:
        writer = _writers.get(where)
        if writer is None:
            writer = _writers[where] = EventFile(where)
        writer.add_scalars(step, values)


@atexit.register
def close_scalars() -> None:
    """Close ``log_scalars``' writers."""
    with _writers_lock:
        for writer in _writers.values():
            writer.close()
        _writers.clear()


# -- reading event files back (tests, reports) ----------------------------------------------------------


def read_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of the event files directly in ``logdir``: tag -> [(step, value)] in file order, with
    TensorBoard's purge applied (a file's start at purge step s drops earlier files' points at steps >= s).
    Reads TFRecords with tensorboardX's protos; no TensorFlow or TensorBoard needed."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(logdir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            record = data[pos + 12:pos + 12 + length]
            pos += 12 + length + 4
            event = Event.FromString(record)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                out = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in out.items()}
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out
