"""Where a Train worker's figures go besides its Ray Train reports: rank 0's log lines, the driver's progress
board, the Prometheus gauges (``metrics.py``) and the tracking records (``tracking.py``).

Rank 0 logs ``step | loss | per-task loss | samples/s | lr`` every ``train.log_every`` steps and the valid
accuracy of every arm at each evaluation, and records the same figures in TensorBoard event files
(``<run>/tensorboard/<arm>/``) and, with ``tracking.mlflow``, in an MLflow run. The other ranks' calls do
nothing, and read nothing off the device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from tinyllm_ray import console, metrics, tracking
from tinyllm_ray.student.arms import Arm, as_numbers
from tinyllm_ray.student.meter import ThroughputMeter

log = logging.getLogger("tinyllm_ray.student")


class Sinks:
    """One worker's sinks. ``progress``: its row on the driver's console board (None: none, as on ranks other
    than 0 or in a sweep's trial, which shows its trials instead); ``track``: where rank 0 records its scalars
    (None: nowhere); ``arms``: the arms' names, the student first; ``start_step``: the step the loop starts
    (resumes) from."""

    def __init__(self, rank: int, total_steps: int, log_every: int, progress: str | None,
                 track: tracking.Tracking | None, arms: Sequence[str], start_step: int):
        self.rank, self.total_steps, self.log_every = rank, total_steps, log_every
        self.progress = progress
        self.progress_at = 0.0
        self.tracker = None
        if self.rank == 0 and track is not None:
            self.tracker = tracking.TrainLogger(track, arms, start_step)

    def step(self, step: int, arms: Sequence[Arm], step_losses: dict[str, torch.Tensor],
             meter: ThroughputMeter) -> None:
        """The progress board's step count, and every ``train.log_every`` steps rank 0's log line and gauges (the
        student's per-task losses, then each baseline's loss). The only place besides the reports where losses
        are read off the device."""
        if self.progress and time.monotonic() - self.progress_at >= 1.0:  # the step count, at most once a second
            self.progress_at = time.monotonic()
            console.remote_update(self.progress, done=step, total=self.total_steps, unit="steps")
        if self.rank != 0 or step % self.log_every:
            return
        student = arms[0]
        losses = as_numbers(step_losses)
        last = student.task_losses()
        rate = meter.window_rate()
        per_task = " ".join(f"{t} {v:.3f}" for t, v in last.items())
        others = "".join(f" | {a.name} {losses[a.name]:.4f}" for a in arms[1:])
        log.info("step %d | loss %.4f | %s | %.1f samples/s | lr %.2e%s",
                 step, losses[student.name], per_task, rate, student.scheduler.get_last_lr()[0], others)
        if self.progress:
            console.remote_update(self.progress, extra=f"loss {losses[student.name]:.4f} | {rate:.1f} samples/s")
        metrics.train_samples_per_second().set(rate)
        for task, value in last.items():
            metrics.train_loss().set(value, tags={"task": task})
        if self.tracker is not None:
            for arm in arms:
                tasks = last if arm is student else arm.task_losses()
                values = {tracking.LOSS: losses[arm.name], tracking.LR: arm.scheduler.get_last_lr()[0],
                          **{tracking.task_loss(t): v for t, v in tasks.items()}}
                if arm is student:
                    values[tracking.SAMPLES_PER_SECOND] = rate
                self.tracker.scalars(arm.name, step, values)

    def valid(self, step: int, select_on: str, accuracies: dict[str, float]) -> None:
        """Every arm's valid accuracy at ``step`` (the student first), scored by ``select_on``."""
        (_, accuracy), *others = accuracies.items()
        if self.rank == 0:
            log.info("valid accuracy (%s) %.4f after %d steps%s", select_on, accuracy, step,
                     "".join(f" | {n} {v:.4f}" for n, v in others))
            metrics.eval_accuracy().set(accuracy, tags={"split": "valid", "scorer": select_on})
        if self.tracker is not None:
            for name, value in accuracies.items():
                self.tracker.scalars(name, step, {tracking.VALID_ACCURACY: value})

    def close(self, step: int, failed: bool) -> None:
        """The loop has ended at ``step`` (``failed``: by an error): the tracking run closed, the board's row done."""
        if self.tracker is not None:
            self.tracker.close(failed)
        if self.progress:
            console.remote_update(self.progress, done=step, finished=True)
