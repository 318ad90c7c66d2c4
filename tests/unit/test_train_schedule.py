"""The training schedule in numbers: lr warm-up/decay, accumulation windows, resume points, report steps."""

from __future__ import annotations

import pytest

from tinyllm_ray.student.schedule import Schedule, lr_factor


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
    plan = Schedule(micro_per_epoch=5, accum=2, epochs=3, checkpoint_every=None, eval_every=None)
    assert plan.steps_per_epoch == 3 and plan.total_steps == 9
    assert [plan.window(m) for m in range(5)] == [2, 2, 2, 2, 1]  # the last window is short
    assert [m for m in range(5) if plan.closes_window(m)] == [1, 3, 4]
    # each window's 1/size scaling sums to one per optimizer step
    closes = [m for m in range(5) if plan.closes_window(m)]
    starts = [0] + [c + 1 for c in closes[:-1]]
    assert [sum(1 / plan.window(m) for m in range(s, c + 1)) for s, c in zip(starts, closes)] == [1, 1, 1]


def test_resume_point_skips_the_consumed_micro_batches() -> None:
    plan = Schedule(micro_per_epoch=5, accum=2, epochs=3, checkpoint_every=2, eval_every=None)
    assert plan.micro_done(0) == (0, 0)
    assert plan.micro_done(2) == (0, 4)
    assert plan.micro_done(3) == (1, 0)  # an epoch boundary: the next epoch from its start
    assert plan.micro_done(5) == (1, 4)


@pytest.mark.parametrize("every, expected", [(None, [3, 6, 9]), (2, [2, 4, 6, 8, 9]), (4, [4, 8, 9])])
def test_checkpoint_steps(every, expected) -> None:
    plan = Schedule(micro_per_epoch=5, accum=2, epochs=3, checkpoint_every=every, eval_every=None)
    assert [s for s in range(1, 10) if plan.is_checkpoint(s)] == expected  # the last step always


def test_every_checkpoint_is_a_report_and_eval_steps_add_more() -> None:
    plan = Schedule(micro_per_epoch=4, accum=1, epochs=2, checkpoint_every=4, eval_every=3)
    assert [s for s in range(1, 9) if plan.is_report(s)] == [3, 4, 6, 8]
    assert [s for s in range(1, 9) if plan.is_checkpoint(s)] == [4, 8]


def test_steps_redone_after_a_restart_are_at_most_the_checkpoint_interval() -> None:
    plan = Schedule(micro_per_epoch=7, accum=2, epochs=4, checkpoint_every=3, eval_every=None)
    for failed_at in range(1, plan.total_steps + 1):
        last = max([s for s in range(1, failed_at + 1) if plan.is_checkpoint(s)], default=0)
        assert failed_at - last < 3 or plan.is_checkpoint(failed_at)


# --- train.max_steps: exactly that many optimizer steps, over as many epochs as they take ---------------


def run_loop(plan: Schedule, start_step: int = 0) -> list[tuple[int, int, int]]:
    """The control flow of ``worker.train_loop_per_worker`` on a plan: (epoch, micro, the optimizer step it is
    part of) of every micro-batch trained, when resuming from a checkpoint of step ``start_step``."""
    trained, step = [], start_step
    start_epoch, skip = plan.micro_done(step)
    for epoch in range(start_epoch, plan.passes):
        for micro in range(plan.micro_per_epoch):
            if epoch == start_epoch and micro < skip:
                continue
            trained.append((epoch, micro, step + 1))
            if not plan.closes_window(micro):
                continue
            step += 1
            if step >= plan.total_steps:
                break
    return trained


def test_max_steps_replaces_epochs_and_may_end_mid_epoch() -> None:
    # 5 micro-batches, 2 per step: 3 steps per epoch; 7 steps = two epochs and the first step of a third
    plan = Schedule(micro_per_epoch=5, accum=2, epochs=1, checkpoint_every=None, eval_every=None, max_steps=7)
    assert plan.total_steps == 7 and plan.passes == 3
    trained = run_loop(plan)
    assert trained[-1] == (2, 1, 7)  # stops after step 7, mid-epoch 2
    assert len(trained) == 5 + 5 + 2
    # epochs is ignored both ways: more epochs than needed do not extend the run
    more = Schedule(micro_per_epoch=5, accum=2, epochs=50, checkpoint_every=None, eval_every=None, max_steps=7)
    assert more.total_steps == 7 and more.passes == 3 and run_loop(more) == trained


def test_max_steps_within_the_first_epoch() -> None:
    plan = Schedule(micro_per_epoch=100, accum=4, epochs=3, checkpoint_every=None, eval_every=None, max_steps=2)
    assert plan.total_steps == 2 and plan.passes == 1
    assert [s for s in range(1, 3) if plan.is_checkpoint(s)] == [2]
    assert run_loop(plan)[-1] == (0, 7, 2)


def test_without_max_steps_the_run_is_epochs_passes() -> None:
    plan = Schedule(micro_per_epoch=5, accum=2, epochs=3, checkpoint_every=None, eval_every=None)
    assert plan.passes == 3 and plan.total_steps == 9
    assert run_loop(plan)[-1] == (2, 4, 9) and len(run_loop(plan)) == 15


@pytest.mark.parametrize("every, expected", [(None, [3, 6, 7]), (2, [2, 4, 6, 7]), (7, [7]), (10, [7])])
def test_the_last_step_under_max_steps_is_a_checkpoint(every, expected) -> None:
    plan = Schedule(micro_per_epoch=5, accum=2, epochs=1, checkpoint_every=every, eval_every=None, max_steps=7)
    assert [s for s in range(1, plan.total_steps + 1) if plan.is_checkpoint(s)] == expected


def test_lr_decays_to_zero_at_max_steps() -> None:
    torch = pytest.importorskip("torch")
    plan = Schedule(micro_per_epoch=5, accum=2, epochs=100, checkpoint_every=None, eval_every=None, max_steps=8)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    # what TrainWorker builds: the schedule's total is the plan's
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, 2, plan.total_steps))
    lrs = []
    for _ in range(plan.total_steps):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == [0.5, 1.0, 1.0] and all(lr > 0 for lr in lrs)
    assert lrs[-1] == pytest.approx(1 / 6)  # the last step's lr: one step of six of decay left
    assert scheduler.get_last_lr()[0] == 0.0  # reached 0 at max_steps


def test_resume_under_max_steps_trains_exactly_the_rest() -> None:
    plan = Schedule(micro_per_epoch=5, accum=2, epochs=1, checkpoint_every=2, eval_every=None, max_steps=7)
    full = run_loop(plan)
    for ckpt in [s for s in range(1, plan.total_steps + 1) if plan.is_checkpoint(s)]:
        rest = run_loop(plan, start_step=ckpt)
        assert rest == [t for t in full if t[2] > ckpt], ckpt  # same micro-batches, same steps, nothing more


def test_resume_from_the_last_step_trains_nothing_even_mid_epoch() -> None:
    plan = Schedule(micro_per_epoch=5, accum=2, epochs=1, checkpoint_every=None, eval_every=None, max_steps=7)
    assert plan.micro_done(7) == (3, 0)  # run complete: past the last pass
    assert plan.micro_done(6) == (2, 0) and plan.micro_done(5) == (1, 4)  # unchanged before the end
    assert run_loop(plan, start_step=7) == []
    plain = Schedule(micro_per_epoch=5, accum=2, epochs=3, checkpoint_every=None, eval_every=None)
    assert plain.micro_done(9) == (3, 0) and run_loop(plain, start_step=9) == []


def test_make_schedule_reads_max_steps() -> None:
    from tinyllm_ray.config import from_dict
    from tinyllm_ray.student.schedule import make_schedule

    config = from_dict({"student": {"model": "google/flan-t5-small"},
                        "train": {"epochs": 2, "batch_size": 8, "grad_accum_steps": 8, "max_steps": 10_000}})
    plan = make_schedule(config, n_rows=4957)  # OBQA's train size: 620 micro-batches = 78 steps per epoch
    assert (plan.steps_per_epoch, plan.total_steps, plan.passes) == (78, 10_000, 129)
    assert make_schedule(from_dict({"student": {"model": "m"}, "train": {"epochs": 2}}), 64).max_steps is None


@pytest.mark.parametrize("value", [0, -1, "10", 1.5, True])
def test_max_steps_must_be_a_positive_int(value) -> None:
    from tinyllm_ray.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="train.max_steps") as err:
        from_dict({"student": {"model": "m"}, "train": {"max_steps": value}})
    assert "unknown key" not in str(err.value)
