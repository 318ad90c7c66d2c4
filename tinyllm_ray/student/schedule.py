"""The training schedule in plain numbers (no Ray): steps, accumulation windows, learning rate, reports.

A *micro-batch* is ``train.batch_size`` questions on one worker; an optimizer *step* sums the gradients of
``train.grad_accum_steps`` micro-batches (the last window of an epoch may be shorter). Each micro-batch's
loss is divided by its window's size, so a step's gradient is the mean over its micro-batches: with equal
micro-batches that is the gradient of one batch ``grad_accum_steps`` times larger.

The run is ``train.epochs`` passes, or with ``train.max_steps`` exactly that many steps over as many passes
as they take (``passes``; the last may stop mid-epoch, and ``epochs`` is ignored). Checkpoints are taken
every ``train.checkpoint_every`` steps (default: at the end of every epoch) and at the last step; the valid
split is scored at every checkpoint and every ``eval.every_steps`` steps, and each of those is one
``ray.train.report``.
"""

from __future__ import annotations

import dataclasses
import math

from tinyllm_ray.config import Config


@dataclasses.dataclass(frozen=True)
class Schedule:
    micro_per_epoch: int
    """Micro-batches per epoch on every worker (``streaming_split(equal=True)`` gives each the same rows)."""
    accum: int
    epochs: int
    checkpoint_every: int | None
    eval_every: int | None
    max_steps: int | None = None
    """``train.max_steps``: the run is exactly this many steps, and ``epochs`` is ignored."""

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_per_epoch / self.accum)

    @property
    def total_steps(self) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, self.steps_per_epoch * self.epochs)

    @property
    def passes(self) -> int:
        """Epochs the loop runs (started ones: with ``max_steps`` the last may end mid-epoch)."""
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def window(self, micro: int) -> int:
        """Size of the accumulation window holding micro-batch ``micro`` (0-based, within an epoch)."""
        first = micro - micro % self.accum
        return min(self.accum, self.micro_per_epoch - first)

    def closes_window(self, micro: int) -> bool:
        """Micro-batch ``micro`` is the last of its window: the optimizer steps after it."""
        return (micro + 1) % self.accum == 0 or micro + 1 == self.micro_per_epoch

    def micro_done(self, step: int) -> tuple[int, int]:
        """(epoch, micro-batches already consumed in it) once ``step`` steps are done; ``(passes, 0)`` once
        the run is complete (nothing left to train, even when the last step ended mid-epoch)."""
        if step >= self.total_steps:
            return self.passes, 0
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        return epoch, min(in_epoch * self.accum, self.micro_per_epoch)

    def is_checkpoint(self, step: int) -> bool:
        if step == self.total_steps:
            return True
        every = self.checkpoint_every or self.steps_per_epoch
        return step % every == 0

    def is_report(self, step: int) -> bool:
        return self.is_checkpoint(step) or bool(self.eval_every and step % self.eval_every == 0)


def make_schedule(config: Config, n_rows: int) -> Schedule:
    tc = config.train
    rows_per_worker = n_rows // tc.num_workers
    return Schedule(micro_per_epoch=max(1, math.ceil(rows_per_worker / tc.batch_size)), accum=tc.grad_accum_steps,
                epochs=tc.epochs, checkpoint_every=tc.checkpoint_every, eval_every=config.eval.every_steps,
                max_steps=tc.max_steps)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps to the peak, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))
