"""The sweep's pure parts: the ``tune`` config section, search spaces, leave-one-out trials, concurrency,
the report table. No Ray cluster."""

from __future__ import annotations

import importlib.util

import pytest

from tinyllm_ray import tune
from tinyllm_ray.config import ConfigError, from_dict, validate
from tinyllm_ray.report import render_markdown, tune_markdown


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
    space, first = tune.search_space(config)
    searcher, limit = tune._searcher(config, first, 2)
    assert limit == 2 and searcher.set_search_properties("valid_accuracy", "max", space)
    point = searcher.suggest("t0")
    assert 0.1 <= point["gamma"] <= 2.0 and point["alpha.a"] in (0.0, 1.0) and 1e-4 <= point["lr"] <= 1e-2


def test_grid_is_every_combination_with_the_train_values_elsewhere():
    config = make({"gamma": [0.5, 1.0], "alpha": {"b": [0.0, 1.0]}})
    points = tune.grid_points(config)
    assert points == [
        {"gamma": 0.5, "alpha.a": 0.5, "alpha.b": 0.0},
        {"gamma": 0.5, "alpha.a": 0.5, "alpha.b": 1.0},
        {"gamma": 1.0, "alpha.a": 0.5, "alpha.b": 0.0},
        {"gamma": 1.0, "alpha.a": 0.5, "alpha.b": 1.0},
    ]
    space, first = tune.search_space(config)
    assert space == {"point": {"grid_search": points}} and first == []


def test_leave_one_out_adds_one_trial_per_teacher_and_the_reference():
    config = make({"leave_one_teacher_out": True})
    assert tune.grid_points(config) == [
        {"gamma": 1.0, "alpha.a": 0.5, "alpha.b": 0.5},
        {"gamma": 1.0, "alpha.a": 0.0, "alpha.b": 0.5},
        {"gamma": 1.0, "alpha.a": 0.5, "alpha.b": 0.0},
    ]


def test_leave_one_out_points_already_in_the_grid_are_not_repeated():
    config = make({"alpha": {"a": [0.0, 0.5]}, "leave_one_teacher_out": True})
    points = tune.grid_points(config)
    assert len(points) == len({tuple(sorted(p.items())) for p in points}) == 3


def test_all_zero_points_are_left_out():
    config = make({"gamma": [0.0, 1.0], "leave_one_teacher_out": True}, teachers=("a",), gamma=0.0)
    points = tune.grid_points(config)
    assert {"gamma": 0.0, "alpha.a": 0.0} not in points
    assert {"gamma": 1.0, "alpha.a": 0.5} in points


def test_random_search_space_has_domains_and_leave_one_out_first():
    config = make({"search": "random", "num_samples": 4, "gamma": {"low": 0.1, "high": 2.0},
                   "alpha": {"a": [0.25, 1.0]}, "lr": {"low": 1e-4, "high": 1e-2, "log": True},
                   "leave_one_teacher_out": True})
    space, first = tune.search_space(config)
    assert type(space["gamma"]).__name__ == "Float" and type(space["lr"]).__name__ == "Float"
    assert space["alpha.a"].categories == [0.25, 1.0]
    assert space["alpha.b"] == 0.5  # not swept: the train value, so leave-one-out can zero it
    assert first[0] == {"gamma": 1.0, "alpha.a": 0.5, "alpha.b": 0.5, "lr": 5e-4}
    assert [p["alpha.a"] for p in first] == [0.5, 0.0, 0.5] and [p["alpha.b"] for p in first] == [0.5, 0.5, 0.0]


def test_a_point_becomes_the_trials_train_section():
    config = make({"gamma": [2.0]})
    trial = tune.apply_point(config, {"gamma": 2.0, "alpha.a": 0.0, "alpha.b": 0.5, "lr": 1e-3})
    assert trial.task_weights() == {"answer": 2.0, "a": 0.0, "b": 0.5}
    assert trial.train.lr == 1e-3 and config.train.gamma == 1.0
    assert tune.point_of({"point": {"gamma": 2.0}}) == {"gamma": 2.0} == tune.point_of({"gamma": 2.0})


@pytest.mark.parametrize("resources, train, expected", [
    ({"CPU": 2}, {}, 2),                                   # 1 Train worker each (tokenised before the sweep)
    ({"CPU": 8}, {}, 8),
    ({"CPU": 8}, {"num_workers": 2, "cpus_per_worker": 1.5}, 2),
    ({"CPU": 2}, {"shuffle": "global"}, 1),                # + 1 CPU for the shuffle tasks
    ({"CPU": 1}, {}, 1),                                   # never 0
    ({"CPU": 32, "GPU": 2}, {"use_gpu": True}, 2),
])
def test_concurrent_trials_follow_the_resources(resources, train, expected):
    assert tune.concurrent_trials(make({"gamma": [1.0]}, **train), resources) == expected


def test_concurrent_trials_when_set():
    assert tune.concurrent_trials(make({"gamma": [1.0], "max_concurrent_trials": 3}), {"CPU": 2}) == 3


def test_evaluations_are_counted_from_the_step():
    from tinyllm_ray.student.schedule import Plan

    plan = Plan(micro_per_epoch=4, accum=1, epochs=3, checkpoint_every=None, eval_every=None)
    steps = tune.report_steps(plan)
    assert steps == [4, 8, 12]
    import bisect

    assert [bisect.bisect_right(steps, s) for s in (4, 8, 12)] == [1, 2, 3]


TRIALS = [
    {"trial_id": "abc_00000", "point": {"gamma": 0.5, "alpha.a": 0.5}, "valid_accuracy": 0.25, "evaluations": 1,
     "steps": 3, "status": "stopped early", "error": None, "checkpoint": "/x/c3", "best_step": 3,
     "checkpoint_valid_accuracy": 0.25},
    {"trial_id": "abc_00001", "point": {"gamma": 1.0, "alpha.a": 0.5}, "valid_accuracy": 0.5, "evaluations": 3,
     "steps": 9, "status": "completed", "error": None, "checkpoint": "/x/c6", "best_step": 6,
     "checkpoint_valid_accuracy": 0.5},
    {"trial_id": "abc_00002", "point": {"gamma": 1.0, "alpha.a": 0.0}, "valid_accuracy": None, "evaluations": 0,
     "steps": 0, "status": "error", "error": "RuntimeError: boom", "checkpoint": None, "best_step": None,
     "checkpoint_valid_accuracy": None},
]


def test_best_trial_is_the_best_kept_checkpoint():
    best = tune.best_trial(TRIALS)
    assert best["trial_id"] == "abc_00001" and best["valid_accuracy"] == 0.5 and best["best_step"] == 6
    assert tune.best_trial([TRIALS[2]]) is None


def test_report_section_and_table():
    config = make({"gamma": [0.5, 1.0], "leave_one_teacher_out": True}, teachers=("a",))
    section = tune.sweep_report(TRIALS, tune.best_trial(TRIALS), config, max_t=3, concurrent=1)
    assert section["evaluations_total"] == 4 and section["swept"] == ["gamma", "leave_one_teacher_out"]
    assert [t["status"] for t in section["trials"]] == ["stopped early", "completed", "error"]
    assert section["best"] == {"trial_id": "abc_00001", "point": {"gamma": 1.0, "alpha.a": 0.5},
                               "valid_accuracy": 0.5, "step": 6}
    section["plot"] = "tune_valid_accuracy.png"
    lines = tune_markdown(section)
    assert "| trial | gamma | alpha.a | valid accuracy | evaluations | steps | status |" in lines
    assert "| **abc_00001** | 1.000 | 0.500 | 0.500 | 3 | 9 | completed |" in lines
    assert "| abc_00002 | 1.000 | 0.000 | n/a | 0 | 0 | error |" in lines
    assert lines[-1] == "![valid accuracy against the loss weights](tune_valid_accuracy.png)"
    report = {"run_name": "r", "dataset": {"name": "synthetic", "train": 1, "valid": 1, "test": 1},
              "teachers": [], "timings": {"total_s": 1.0}, "tune": section,
              "student": {"model": "m", "loss_weights": {"answer": 1.0}, "valid_accuracy": 0.5, "test_accuracy": 0.5,
                          "valid_accuracy_rank": 0.5, "test_accuracy_rank": 0.5, "steps": 9, "seconds": 1.0}}
    assert "## Loss-weight sweep" in render_markdown(report)


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    tune.plot(TRIALS, tune.best_trial(TRIALS), tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
