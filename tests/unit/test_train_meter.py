"""The training loop's ThroughputMeter on fake clocks, and the loop config's failure hook from the environment."""

from __future__ import annotations

import pytest

from tinyllm_ray.student import faults
from tinyllm_ray.student.meter import (
    DATA_WAIT_SHARE,
    FIRST_BATCH_WAIT_SHARE,
    SAMPLES_PER_CPU_SECOND,
    SAMPLES_PER_SECOND,
    STARTUP_SECONDS,
    ThroughputMeter,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_meter_counts_training_time_and_leaves_out_pauses() -> None:
    wall, cpu = Clock(), Clock()
    meter = ThroughputMeter(world=2, wall=wall, cpu=cpu)
    meter.start()
    meter.count(10)
    meter.count(10)
    wall.now, cpu.now = 4.0, 2.0
    meter.stop()  # a report: 20 rows on this worker in 4 s (2 CPU-s)
    assert meter.numbers() == {SAMPLES_PER_SECOND: 20 * 2 / 4.0, SAMPLES_PER_CPU_SECOND: 20 / 2.0, DATA_WAIT_SHARE: 0,
                               FIRST_BATCH_WAIT_SHARE: 0, STARTUP_SECONDS: 0}
    wall.now, cpu.now = 100.0, 50.0  # valid scoring and a checkpoint: not training time
    meter.start(new_window=True)
    meter.count(20)
    wall.now, cpu.now = 104.0, 52.0
    meter.stop()
    assert meter.numbers() == {SAMPLES_PER_SECOND: 40 * 2 / 8.0, SAMPLES_PER_CPU_SECOND: 40 / 4.0, DATA_WAIT_SHARE: 0,
                               FIRST_BATCH_WAIT_SHARE: 0, STARTUP_SECONDS: 0}
    assert (meter.rows, meter.seconds, meter.cpu_seconds) == (40, 8.0, 4.0)


def test_the_wait_for_each_batch_is_a_share_of_training_time() -> None:
    wall = Clock()
    meter = ThroughputMeter(world=1, wall=wall, cpu=Clock())

    def slow_source():
        for arrives_after in (1.0, 0.0, 3.0):  # the loader takes this long before each batch
            wall.now += arrives_after
            yield arrives_after

    meter.start()
    for _ in meter.batches(slow_source()):
        wall.now += 2.0  # the step itself
    meter.stop()
    assert meter.waited == 4.0 and meter.seconds == 10.0
    assert meter.numbers()[DATA_WAIT_SHARE] == pytest.approx(0.4)
    assert meter.numbers()[FIRST_BATCH_WAIT_SHARE] == pytest.approx(0.1)  # the epoch's start: its first batch


def test_the_runs_first_batch_is_start_up_not_training_time() -> None:
    """The loop's figure runs from its first batch to its last step: the wait for the run's first batch (Ray
    Data's start-up) is reported apart; a later epoch's first batch is training time."""
    wall, cpu = Clock(), Clock()
    meter = ThroughputMeter(world=1, wall=wall, cpu=cpu)

    def source(waits):
        for wait in waits:
            wall.now += wait
            cpu.now += wait / 2
            yield wait

    meter.start()
    for _ in meter.batches(source([1.5, 0.0]), startup=True):
        wall.now += 2.0
        meter.count(4)
    for _ in meter.batches(source([0.25, 0.0])):  # the next epoch
        wall.now += 2.0
        meter.count(4)
    meter.stop()
    numbers = meter.numbers()
    assert numbers[STARTUP_SECONDS] == 1.5
    assert meter.seconds == 8.25 and numbers[SAMPLES_PER_SECOND] == pytest.approx(16 / 8.25)
    assert numbers[FIRST_BATCH_WAIT_SHARE] == pytest.approx(0.25 / 8.25)


def test_log_window_rate_resets_at_each_log_line_and_after_a_pause() -> None:
    wall = Clock()
    meter = ThroughputMeter(world=3, wall=wall, cpu=Clock())  # the window opens when the meter is made
    meter.start()
    meter.count(5)
    wall.now = 2.0
    assert meter.window_rate() == 5 * 3 / 2.0
    meter.count(4)
    wall.now = 3.0
    assert meter.window_rate() == 4 * 3 / 1.0  # since the last log line only
    meter.count(6)
    meter.stop()
    wall.now = 50.0
    meter.start(new_window=True)  # after a report: the pause and its rows before it leave the window
    meter.count(2)
    wall.now = 51.0
    assert meter.window_rate() == 2 * 3 / 1.0
    meter.start()  # a new epoch keeps the window
    meter.count(1)
    wall.now = 52.0
    assert meter.window_rate() == 1 * 3 / 1.0


def test_meter_never_divides_by_zero() -> None:
    meter = ThroughputMeter(world=1, wall=Clock(), cpu=Clock())
    meter.start()
    meter.count(1)
    meter.stop()
    numbers = meter.numbers()
    assert numbers[SAMPLES_PER_SECOND] > 0 and numbers[SAMPLES_PER_CPU_SECOND] > 0
    assert meter.window_rate() > 0


def test_fail_once_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.FAIL_AT_STEP_ENV, raising=False)
    assert faults.FailOnce.from_env() is None
    monkeypatch.setenv(faults.FAIL_AT_STEP_ENV, "3")
    monkeypatch.setenv(faults.FAIL_MARKER_ENV, "/tmp/marker")
    assert faults.FailOnce.from_env() == faults.FailOnce(step=3, marker="/tmp/marker")


def test_the_injected_failure_hits_the_last_worker_once(tmp_path) -> None:
    fail = faults.FailOnce(step=3, marker=str(tmp_path / "marker"))
    fail.maybe_raise(2, rank=1, world=2)  # another step
    fail.maybe_raise(3, rank=0, world=2)  # another worker
    with pytest.raises(RuntimeError, match="injected worker failure at step 3"):
        fail.maybe_raise(3, rank=1, world=2)
    assert (tmp_path / "marker").read_text() == "failed once at step 3\n"
    fail.maybe_raise(3, rank=1, world=2)  # the restarted group goes on
