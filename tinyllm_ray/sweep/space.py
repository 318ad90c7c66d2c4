"""The sweep's search space (no Ray cluster needed): the swept values, the trial points, Tune's
``param_space``, a point applied to the run config, and how many trials run at once.

Trial points are flat dicts: ``gamma``, ``alpha.<teacher>`` (every teacher) and ``lr`` when it is swept.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import ray.tune

from tinyllm_ray.config import Config, ConfigError, RangeConfig
from tinyllm_ray.student.schedule import Schedule


def swept_values(config: Config) -> dict[str, Any]:
    """The swept keys and their values (a list or a ``RangeConfig``), in a stable order."""
    t = config.tune
    out: dict[str, Any] = {}
    if t.gamma is not None:
        out["gamma"] = t.gamma
    for name in config.teacher_names():
        if name in t.alpha:
            out[f"alpha.{name}"] = t.alpha[name]
    if t.lr is not None:
        out["lr"] = t.lr
    return out


def base_point(config: Config) -> dict[str, float]:
    """The ``train`` section's values of every key a trial sets."""
    point = {"gamma": config.train.gamma, **{f"alpha.{n}": config.alpha_of(n) for n in config.teacher_names()}}
    if config.tune.lr is not None:
        point["lr"] = config.train.lr
    return point


def _all_weights_zero(point: dict[str, float]) -> bool:
    return all(v == 0 for k, v in point.items() if k != "lr")


def leave_one_out_points(config: Config) -> list[dict[str, float]]:
    """The ``train`` weights with every teacher, then once per teacher with its alpha set to 0."""
    base = base_point(config)
    points = [base] + [{**base, f"alpha.{name}": 0.0} for name in config.teacher_names()]
    return [p for p in points if not _all_weights_zero(p)]


def grid_points(config: Config) -> list[dict[str, float]]:
    """Every combination of the swept lists, then the leave-one-out points not already among them."""
    swept = swept_values(config)
    base = base_point(config)
    points = [{**base, **dict(zip(swept, combo))} for combo in itertools.product(*swept.values())]
    if config.tune.leave_one_teacher_out:
        points += [p for p in leave_one_out_points(config) if p not in points]
    return [p for p in points if not _all_weights_zero(p)]


def trial_count(config: Config) -> int:
    """Trials the sweep starts (``grid``: every point, ``num_samples`` times; else ``num_samples``)."""
    if config.tune.search == "grid":
        return len(grid_points(config)) * config.tune.num_samples
    return config.tune.num_samples


def _tune_domain(values: Any) -> Any:
    if isinstance(values, RangeConfig):
        return (ray.tune.loguniform if values.log else ray.tune.uniform)(values.low, values.high)
    return ray.tune.choice(list(values))


def search_space(config: Config) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Tune's ``param_space`` and the points to evaluate first.

    ``grid``: one grid axis ``point`` over ``grid_points`` (leave-one-out included, all-zero points left out).
    ``random``/``optuna``: a flat space (a domain per swept key, the ``train`` value for the others) and the
    leave-one-out points as ``points_to_evaluate``.
    """
    t = config.tune
    if t.search == "grid":
        points = grid_points(config)
        if not points:
            raise ConfigError("tune: every grid point has all loss weights zero; nothing would be learned")
        return {"point": ray.tune.grid_search(points)}, []
    swept = swept_values(config)
    space: dict[str, Any] = {**base_point(config), **{k: _tune_domain(v) for k, v in swept.items()}}
    first = leave_one_out_points(config) if t.leave_one_teacher_out else []  # random only (config rule)
    return space, first


def point_of(trial_config: dict[str, Any]) -> dict[str, float]:
    """A trial's flat point from its Tune config (grid trials nest it under ``point``)."""
    return dict(trial_config.get("point", trial_config))


def apply_point(config: Config, point: dict[str, float]) -> Config:
    """The run config of one trial: the ``train`` section with the point's weights (and lr)."""
    alpha = dict(config.train.alpha)
    alpha.update({k.removeprefix("alpha."): float(v) for k, v in point.items() if k.startswith("alpha.")})
    train = dataclasses.replace(config.train, gamma=float(point.get("gamma", config.train.gamma)), alpha=alpha,
                                lr=float(point.get("lr", config.train.lr)))
    return dataclasses.replace(config, train=train)


def format_point(point: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in point.items())


def concurrent_trials(config: Config, resources: dict[str, float]) -> int:
    """How many trials run at once: set, or the cluster's CPUs (GPUs) over one trial's needs, at least 1.

    One trial holds its Train workers' CPUs; its Tune driver function, Train controller and Ray Data split
    coordinator take none, and the data was tokenised once before the sweep. With ``train.shuffle: global``
    each trial also keeps one CPU free for Ray Data's shuffle tasks every epoch.
    """
    if config.tune.max_concurrent_trials:
        return config.tune.max_concurrent_trials
    tc = config.train
    shuffle_cpus = 1 if tc.shuffle == "global" else 0
    fits = int(resources.get("CPU", 0) // (tc.num_workers * tc.cpus_per_worker + shuffle_cpus))
    if tc.use_gpu:
        fits = min(fits, int(resources.get("GPU", 0) // tc.num_workers))
    return max(1, fits)


def report_steps(plan: Schedule) -> list[int]:
    """The optimizer steps at which a trial reports a valid score (one Tune iteration each)."""
    return [s for s in range(1, plan.total_steps + 1) if plan.is_report(s)]
