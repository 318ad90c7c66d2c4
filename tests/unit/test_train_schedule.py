"""The training schedule in numbers: lr warm-up/decay, accumulation windows, resume points, report steps."""

from __future__ import annotations

import pytest

from tinyllm_ray.student.schedule import Plan, lr_factor


def test_lr_warms_up_linearly_then_decays_to_zero() -> None:
    factors = [lr_factor(s, warmup=4, total=12) for s in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0
    assert factors[8] == pytest.approx(0.5)
    assert factors[12] == 0.0
    assert all(a >= b for a, b in zip(factors[3:], factors[4:]))  # never rises after the peak


def test_lr_without_warmup_starts_at_the_peak() -> None:
    assert lr_factor(0, warmup=0, total=10) == 1.0
    assert lr_factor(5, warmup=0, total=10) == 0.5
    assert lr_factor(20, warmup=0, total=10) == 0.0


def test_accumulation_windows_cover_every_micro_batch_once() -> None:
    plan = Plan(micro_per_epoch=5, accum=2, epochs=3, checkpoint_every=None, eval_every=None)
    assert plan.steps_per_epoch == 3 and plan.total_steps == 9
    assert [plan.window(m) for m in range(5)] == [2, 2, 2, 2, 1]  # the last window is short
    assert [m for m in range(5) if plan.closes_window(m)] == [1, 3, 4]
    # each window's 1/size scaling sums to one per optimizer step
    closes = [m for m in range(5) if plan.closes_window(m)]
    starts = [0] + [c + 1 for c in closes[:-1]]
    assert [sum(1 / plan.window(m) for m in range(s, c + 1)) for s, c in zip(starts, closes)] == [1, 1, 1]


def test_resume_point_skips_the_consumed_micro_batches() -> None:
    plan = Plan(micro_per_epoch=5, accum=2, epochs=3, checkpoint_every=2, eval_every=None)
    assert plan.micro_done(0) == (0, 0)
    assert plan.micro_done(2) == (0, 4)
    assert plan.micro_done(3) == (1, 0)  # an epoch boundary: the next epoch from its start
    assert plan.micro_done(5) == (1, 4)


@pytest.mark.parametrize("every, expected", [(None, [3, 6, 9]), (2, [2, 4, 6, 8, 9]), (4, [4, 8, 9])])
def test_checkpoint_steps(every, expected) -> None:
    plan = Plan(micro_per_epoch=5, accum=2, epochs=3, checkpoint_every=every, eval_every=None)
    assert [s for s in range(1, 10) if plan.is_checkpoint(s)] == expected  # the last step always


def test_every_checkpoint_is_a_report_and_eval_steps_add_more() -> None:
    plan = Plan(micro_per_epoch=4, accum=1, epochs=2, checkpoint_every=4, eval_every=3)
    assert [s for s in range(1, 9) if plan.is_report(s)] == [3, 4, 6, 8]
    assert [s for s in range(1, 9) if plan.is_checkpoint(s)] == [4, 8]


def test_steps_redone_after_a_restart_are_at_most_the_checkpoint_interval() -> None:
    plan = Plan(micro_per_epoch=7, accum=2, epochs=4, checkpoint_every=3, eval_every=None)
    for failed_at in range(1, plan.total_steps + 1):
        last = max([s for s in range(1, failed_at + 1) if plan.is_checkpoint(s)], default=0)
        assert failed_at - last < 3 or plan.is_checkpoint(failed_at)
