"""The training loop's throughput meter: questions per wall-clock second and per CPU-second, and the rate
of rank 0's log lines. Kept apart from the loop so that a test can drive it with fake clocks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

SAMPLES_PER_SECOND = "train_samples_per_second"
SAMPLES_PER_CPU_SECOND = "train_samples_per_cpu_second"
DATA_WAIT_SHARE = "train_data_wait_share"
FIRST_BATCH_WAIT_SHARE = "train_first_batch_wait_share"
STARTUP_SECONDS = "train_startup_seconds"


class ThroughputMeter:
    """The loop's throughput, pauses (valid scoring, checkpoints) left out: ``start``/``stop`` bracket the
    training, ``count`` adds the questions of a micro-batch. ``numbers()`` are the report keys (all workers'
    questions per wall-clock second, this worker's per CPU-second of its process); ``window_rate()`` is
    the rate since the last log line (or the last ``start(new_window=True)``). ``batches`` times the loop's
    wait for each micro-batch (``DATA_WAIT_SHARE``: the share of training time the loop stood waiting for Ray
    Data; above a few percent, ingest is what limits the step), and apart the wait for each epoch's first
    micro-batch (``FIRST_BATCH_WAIT_SHARE``, part of the former: the epoch's start-up); the run's first batch is
    start-up (``STARTUP_SECONDS``), outside the training time. The clocks are arguments so that a test can drive
    them."""

    def __init__(self, world: int, wall: Callable[[], float] = time.perf_counter,
                 cpu: Callable[[], float] = time.process_time):
        self.world, self._wall, self._cpu = world, wall, cpu
        self.rows, self.seconds, self.cpu_seconds, self.waited, self.first_waited = 0, 0.0, 0.0, 0.0, 0.0
        self.startup_seconds = 0.0
        self._started = self._cpu_started = 0.0
        self._window_start, self._window_rows = wall(), 0

    def start(self, new_window: bool = False) -> None:
        self._started, self._cpu_started = self._wall(), self._cpu()
        if new_window:
            self._window_start, self._window_rows = self._started, 0

    def stop(self) -> None:
        self.seconds += self._wall() - self._started
        self.cpu_seconds += self._cpu() - self._cpu_started

    def batches(self, items: Iterable[T], startup: bool = False) -> Iterator[T]:
        """``items``, with the time each one took to arrive added to the data wait. ``startup``: the run's first
        epoch, whose first item is the pipeline's start-up (``STARTUP_SECONDS``), not training time: the clocks
        start again when it has come (the loop's figure runs from its first batch to its last step)."""
        source, first = iter(items), True
        while True:
            asked = self._wall()
            try:
                item = next(source)
            except StopIteration:
                return
            waited = self._wall() - asked
            if first and startup:
                self.startup_seconds += waited
                self._started, self._cpu_started = self._wall(), self._cpu()
                self._window_start = max(self._window_start, self._started)
            else:
                self.waited += waited
                self.first_waited += waited if first else 0.0
            first = False
            yield item

    def count(self, rows: int) -> None:
        self.rows += rows
        self._window_rows += rows

    def window_rate(self) -> float:
        now = self._wall()
        rate = self._window_rows * self.world / max(now - self._window_start, 1e-9)
        self._window_start, self._window_rows = now, 0
        return rate

    def numbers(self) -> dict[str, float]:
        return {SAMPLES_PER_SECOND: self.rows * self.world / max(self.seconds, 1e-9),
                SAMPLES_PER_CPU_SECOND: self.rows / max(self.cpu_seconds, 1e-9),
                DATA_WAIT_SHARE: self.waited / max(self.seconds, 1e-9),
                FIRST_BATCH_WAIT_SHARE: self.first_waited / max(self.seconds, 1e-9),
                STARTUP_SECONDS: self.startup_seconds}
