"""The sweep's search space (``tinyllm_ray.sweep.space``) and the ``tune`` config section it reads: the
section's errors, grid and random search spaces, leave-one-out trials, trial concurrency. No Ray cluster."""

from __future__ import annotations

import importlib.util

import pytest

from tinyllm_ray.config import ConfigError, from_dict, validate
from tinyllm_ray.sweep.run import make_searcher
from tinyllm_ray.sweep.space import apply_point, concurrent_trials, grid_points, point_of, report_steps, search_space


def make(tune_section: dict | None, teachers=("a", "b"), **train) -> object:
    raw = {
        "student": {"model": "hub/student"},
        "teachers": [{"name": n, "model": f"hub/{n}"} for n in teachers],
        "train": {"gamma": 1.0, "alpha": {n: 0.5 for n in teachers}, **train},
    }
    if tune_section is not None:
        raw["tune"] = tune_section
    config = from_dict(raw)
    validate(config, check_paths=False)
    return config


def errors_of(tune_section: dict, **kw) -> str:
    with pytest.raises(ConfigError) as err:
        make(tune_section, **kw)
    return str(err.value)


def test_no_tune_section_means_no_sweep():
    assert make(None).tune is None


def test_defaults_are_asha_grid_on_the_listed_values():
    t = make({"gamma": [0.5, 1]}).tune
    assert (t.search, t.scheduler, t.num_samples, t.leave_one_teacher_out) == ("grid", "asha", 1, False)
    assert t.gamma == [0.5, 1.0] and t.max_concurrent_trials is None


@pytest.mark.parametrize("section, key", [
    ({"alpha": {"c": [1.0]}}, "tune.alpha.c: no teacher named 'c'"),
    ({"gamma": [-1.0]}, "tune.gamma: values must be >= 0"),
    ({"lr": [0.0]}, "tune.lr: values must be > 0"),
    ({"gamma": []}, "tune.gamma: an empty list"),
    ({"gamma": {"low": 0.1, "high": 2.0}}, "tune.gamma: a range needs tune.search random or optuna"),
    ({"gamma": {"low": 2.0, "high": 1.0}, "search": "random"}, "tune.gamma: low 2.0 must be below high 1.0"),
    ({"lr": {"low": 0.0, "high": 1e-3, "log": True}, "search": "random"}, "tune.lr: low must be above 0"),
    ({}, "tune: nothing to sweep"),
    ({"gamma": [1.0], "grace_period": 0}, "tune.grace_period"),
    ({"gamma": [1.0], "scheduler": "hyperband"}, "tune.scheduler"),
    ({"gamma": [1.0], "epochs": 3}, "tune.epochs: unknown key"),
])
def test_bad_sections_name_the_key(section, key):
    assert key in errors_of(section)


def test_leave_one_out_needs_teachers():
    assert "tune.leave_one_teacher_out: there are no teachers" in errors_of(
        {"leave_one_teacher_out": True}, teachers=())


@pytest.mark.skipif(importlib.util.find_spec("optuna") is not None, reason="optuna is installed here")
def test_optuna_without_optuna_is_a_clear_error():
    assert "tune.search: optuna is not installed (pip install optuna)" in errors_of(
        {"gamma": {"low": 0.1, "high": 1.0}, "search": "optuna"})


def test_leave_one_out_is_not_for_optuna():
    assert "tune.leave_one_teacher_out: not with optuna search" in errors_of(
        {"gamma": {"low": 0.1, "high": 1.0}, "search": "optuna", "leave_one_teacher_out": True})


@pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="optuna is not installed")
def test_optuna_suggests_from_the_space():
    config = make({"search": "optuna", "num_samples": 3, "gamma": {"low": 0.1, "high": 2.0},
                   "alpha": {"a": [0.0, 1.0]}, "lr": {"low": 1e-4, "high": 1e-2, "log": True}})
    space, first = search_space(config)
    searcher, limit = make_searcher(config, first, 2)
    assert limit == 2 and searcher.set_search_properties("valid_accuracy", "max", space)
    point = searcher.suggest("t0")
    assert 0.1 <= point["gamma"] <= 2.0 and point["alpha.a"] in (0.0, 1.0) and 1e-4 <= point["lr"] <= 1e-2


def test_grid_is_every_combination_with_the_train_values_elsewhere():
    config = make({"gamma": [0.5, 1.0], "alpha": {"b": [0.0, 1.0]}})
    points = grid_points(config)
    assert points == [
        {"gamma": 0.5, "alpha.a": 0.5, "alpha.b": 0.0},
        {"gamma": 0.5, "alpha.a": 0.5, "alpha.b": 1.0},
        {"gamma": 1.0, "alpha.a": 0.5, "alpha.b": 0.0},
        {"gamma": 1.0, "alpha.a": 0.5, "alpha.b": 1.0},
    ]
    space, first = search_space(config)
    assert space == {"point": {"grid_search": points}} and first == []


def test_leave_one_out_adds_one_trial_per_teacher_and_the_reference():
    config = make({"leave_one_teacher_out": True})
    assert grid_points(config) == [
        {"gamma": 1.0, "alpha.a": 0.5, "alpha.b": 0.5},
        {"gamma": 1.0, "alpha.a": 0.0, "alpha.b": 0.5},
        {"gamma": 1.0, "alpha.a": 0.5, "alpha.b": 0.0},
    ]


def test_leave_one_out_points_already_in_the_grid_are_not_repeated():
    config = make({"alpha": {"a": [0.0, 0.5]}, "leave_one_teacher_out": True})
    points = grid_points(config)
    assert len(points) == len({tuple(sorted(p.items())) for p in points}) == 3


def test_all_zero_points_are_left_out():
    config = make({"gamma": [0.0, 1.0], "leave_one_teacher_out": True}, teachers=("a",), gamma=0.0)
    points = grid_points(config)
    assert {"gamma": 0.0, "alpha.a": 0.0} not in points
    assert {"gamma": 1.0, "alpha.a": 0.5} in points


def test_random_search_space_has_domains_and_leave_one_out_first():
    config = make({"search": "random", "num_samples": 4, "gamma": {"low": 0.1, "high": 2.0},
                   "alpha": {"a": [0.25, 1.0]}, "lr": {"low": 1e-4, "high": 1e-2, "log": True},
                   "leave_one_teacher_out": True})
    space, first = search_space(config)
    assert type(space["gamma"]).__name__ == "Float" and type(space["lr"]).__name__ == "Float"
    assert space["alpha.a"].categories == [0.25, 1.0]
    assert space["alpha.b"] == 0.5  # not swept: the train value, so leave-one-out can zero it
    assert first[0] == {"gamma": 1.0, "alpha.a": 0.5, "alpha.b": 0.5, "lr": 5e-4}
    assert [p["alpha.a"] for p in first] == [0.5, 0.0, 0.5] and [p["alpha.b"] for p in first] == [0.5, 0.5, 0.0]


def test_a_point_becomes_the_trials_train_section():
    config = make({"gamma": [2.0]})
    trial = apply_point(config, {"gamma": 2.0, "alpha.a": 0.0, "alpha.b": 0.5, "lr": 1e-3})
    assert trial.task_weights() == {"answer": 2.0, "a": 0.0, "b": 0.5}
    assert trial.train.lr == 1e-3 and config.train.gamma == 1.0
    assert point_of({"point": {"gamma": 2.0}}) == {"gamma": 2.0} == point_of({"gamma": 2.0})


@pytest.mark.parametrize("resources, train, expected", [
    ({"CPU": 2}, {}, 2),                                   # 1 Train worker each (tokenised before the sweep)
    ({"CPU": 8}, {}, 8),
    ({"CPU": 8}, {"num_workers": 2, "cpus_per_worker": 1.5}, 2),
    ({"CPU": 2}, {"shuffle": "global"}, 1),                # + 1 CPU for the shuffle tasks
    ({"CPU": 1}, {}, 1),                                   # never 0
    ({"CPU": 32, "GPU": 2}, {"use_gpu": True}, 2),
])
def test_concurrent_trials_follow_the_resources(resources, train, expected):
    assert concurrent_trials(make({"gamma": [1.0]}, **train), resources) == expected


def test_concurrent_trials_when_set():
    assert concurrent_trials(make({"gamma": [1.0], "max_concurrent_trials": 3}), {"CPU": 2}) == 3


def test_evaluations_are_counted_from_the_step():
    from tinyllm_ray.student.schedule import Schedule

    plan = Schedule(micro_per_epoch=4, accum=1, epochs=3, checkpoint_every=None, eval_every=None)
    steps = report_steps(plan)
    assert steps == [4, 8, 12]
    import bisect

    assert [bisect.bisect_right(steps, s) for s in (4, 8, 12)] == [1, 2, 3]


def test_asha_stops_the_weaker_trials_at_the_first_rung() -> None:
    """The sweep's scheduler (evaluations as its clock, ``valid_accuracy`` to maximise, the grace period and
    reduction factor of the config) stops the trials below the rung's cutoff and lets the others go on."""
    from ray.tune.experiment import Trial

    from tinyllm_ray.student.checkpoints import SCORE
    from tinyllm_ray.sweep.run import make_scheduler
    from tinyllm_ray.sweep.trial import TIME_ATTR

    scheduler = make_scheduler(make({"gamma": [0.5, 1.0], "grace_period": 1, "reduction_factor": 2}), max_t=3)
    scheduler.set_search_properties(SCORE, "max")
    trials = [Trial("__fake", trial_id=f"t{i}", stub=True) for i in range(4)]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    decisions = [scheduler.on_trial_result(None, trial, {TIME_ATTR: 1, SCORE: score, "training_iteration": 1})
                 for trial, score in zip(trials, [0.9, 0.1, 0.8, 0.2])]
    assert decisions == ["CONTINUE", "STOP", "CONTINUE", "STOP"]
    assert make_scheduler(make({"gamma": [0.5, 1.0], "scheduler": "none"}), max_t=3) is None
