"""The sweep: Ray Tune over the loss weights (gamma, each alpha_i) and optionally the learning rate.

    python jobs/distill.py --config configs/quickstart.yaml

Ray 2.60's Train V2 pattern: every Tune trial runs a driver function (``_trial``) that builds the student's
``TorchTrainer`` with the trial's weights (``student.train.train_student``) and fits it; a Train callback
(``TuneReporter``, Ray's ``TuneReportCallback`` plus an ``evaluations`` counter) passes every valid score
to Tune, where ASHA stops weak trials early (``ReclaimStoppedTrainRuns`` frees a stopped trial's workers at
once). Every trial reads the one rationale store (teachers ran once, before the sweep) through one tokenised
Ray Dataset (tokenised once, before the first trial), runs as many at once as the CPUs (GPUs) hold Train
worker groups, and keeps its Ray Train run in ``<run>/tune/trials/<trial id>/``; Tune's own state is in
``<run>/tune/sweep/``. A resubmitted run with the same run directory restores that state
(``Tuner.restore``): finished trials are not rerun, an interrupted one resumes from its latest Train checkpoint.

After the sweep the best checkpoint on valid over all trials becomes the run's student (no retraining);
``sweep_report`` lists every trial for ``report.json``/``report.md`` and ``plot`` draws valid accuracy
against the weights.

Trial points are flat dicts: ``gamma``, ``alpha.<teacher>`` (every teacher) and ``lr`` when it is swept.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.util.placement_group import PlacementGroup

from tinyllm_ray import prompts, runs, stages
from tinyllm_ray.config import Config, ConfigError, RangeConfig
from tinyllm_ray.stages import stage_key
from tinyllm_ray.data.schema import Question
from tinyllm_ray.student.schedule import Plan, make_plan
from tinyllm_ray.student.batches import target_col
from tinyllm_ray.student.train import (PLACEMENT_GROUP, SCORE, student_layout, tokenized_dataset,
                                       train_student)

log = logging.getLogger("tinyllm_ray.tune")
TIME_ATTR = "evaluations"  # valid scores so far in the trial's Train run: ASHA's clock
PLOT_FILE = "tune_valid_accuracy.png"

# -- the search space (no Ray needed) ----------------------------------------------------------------------


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


def _all_zero(point: dict[str, float]) -> bool:
    return all(v == 0 for k, v in point.items() if k != "lr")


def leave_one_out_points(config: Config) -> list[dict[str, float]]:
    """The ``train`` weights with every teacher, then once per teacher with its alpha set to 0."""
    base = base_point(config)
    points = [base] + [{**base, f"alpha.{name}": 0.0} for name in config.teacher_names()]
    return [p for p in points if not _all_zero(p)]


def grid_points(config: Config) -> list[dict[str, float]]:
    """Every combination of the swept lists, then the leave-one-out points not already among them."""
    swept = swept_values(config)
    base = base_point(config)
    points = [{**base, **dict(zip(swept, combo))} for combo in itertools.product(*swept.values())]
    if config.tune.leave_one_teacher_out:
        points += [p for p in leave_one_out_points(config) if p not in points]
    return [p for p in points if not _all_zero(p)]


def _domain(values: Any) -> Any:
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
    space: dict[str, Any] = {**base_point(config), **{k: _domain(v) for k, v in swept.items()}}
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


def report_steps(plan: Plan) -> list[int]:
    """The optimizer steps at which a trial reports a valid score (one Tune iteration each)."""
    return [s for s in range(1, plan.total_steps + 1) if plan.is_report(s)]


# -- one trial (a Tune driver function) --------------------------------------------------------------------


class TuneReporter(TuneReportCallback):
    """Ray's Train->Tune callback, with ``evaluations`` (valid scores so far, counted from the step) added so
    that ASHA's clock stays right when a resumed trial's Train run goes on from a checkpoint."""

    def __init__(self, steps: list[int]):
        super().__init__()
        self.steps = steps

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        first = dict(metrics[0])
        first[TIME_ATTR] = bisect.bisect_right(self.steps, int(first.get("step", 0)))
        super().after_report(run_context, [first, *metrics[1:]], checkpoint)


def trial_dir(run_dir: Path, trial_id: str) -> Path:
    return run_dir / "tune" / "trials" / trial_id


def _trial(params: dict[str, Any], *, config: Config, examples: pa.Table, tokenized: ray.data.Dataset,
           valid: list[Question], run_dir: str) -> None:
    trial_config = apply_point(config, point_of(params))
    plan = make_plan(trial_config, examples.num_rows)
    where = trial_dir(Path(run_dir), ray.tune.get_context().get_trial_id())
    # RunConfig(storage_path=<trial>/train, name="student"): a restarted trial resumes its own Train run.
    train_student(examples, trial_config, where, valid=valid, callbacks=[TuneReporter(report_steps(plan))],
                  tokenized=tokenized, tag_placement_group=True)


def sweep_tasks(config: Config, examples: pa.Table) -> list[str]:
    """Every task some trial may train (any weight can be swept), as far as the rows have it."""
    return [t for t in config.task_weights() if target_col(t) in examples.column_names]


# -- the sweep ---------------------------------------------------------------------------------------------


class ReclaimStoppedTrainRuns(ray.tune.Callback):
    """Frees the workers' placement group of a Train run whose trial Tune stopped (ASHA).

    Tune stops a trial by ending its actor; the trial's Train controller dies with it and Ray Train's own
    ``PlacementGroupCleaner`` then removes the workers' placement group, seconds later (it polls), or never
    where Ray's State API fails (dashboard off, several Ray instances on the machine: "Found multiple active
    Ray instances") and the next trials wait for ever. Every trial's reports carry its workers' group id
    (``PLACEMENT_GROUP``), so the group of a trial that ended is removed here ``delay_s`` after, while other
    trials run. A trial stopped before its first report has no id: ``reclaim_train_groups`` frees its group
    once no trial runs.
    """

    def __init__(self, delay_s: float = 0.5):
        self.delay_s = delay_s
        self.due: list[tuple[float, str]] = []
        self.unknown = False

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        group = (getattr(trial, "last_result", None) or {}).get(PLACEMENT_GROUP)
        if group:
            self.due.append((time.monotonic() + self.delay_s, group))
        else:
            self.unknown = True

    on_trial_error = on_trial_complete

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        for at, group in [d for d in self.due if d[0] <= now]:
            self.due.remove((at, group))
            remove_group(group)
        if self.unknown and not any(t.status == "RUNNING" for t in trials):
            self.unknown = False
            reclaim_train_groups()


def remove_group(pg_id: str) -> None:
    """Remove one placement group by id, if it still exists."""
    entry = ray.util.placement_group_table().get(pg_id)
    if not entry or entry.get("state") == "REMOVED":
        return
    log.info("tune: removing the placement group %s of a trial that ended", pg_id)
    try:
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
    except Exception as err:  # noqa: BLE001 -- removed by Ray Train meanwhile
        log.debug("tune: placement group %s: %s", pg_id, err)


def reclaim_train_groups() -> None:
    """Remove this job's placement groups that hold only CPUs/GPUs: call it only while no trial of it runs.

    A placement group's id ends with the id of the job that created it (the driver's; Train controllers are
    actors of the same job), so other jobs' groups on a shared cluster are never touched."""
    job = ray.get_runtime_context().get_job_id()
    for pg_id, entry in ray.util.placement_group_table().items():
        bundles = list(entry.get("bundles", {}).values())
        if (pg_id.endswith(job) and entry.get("state") == "CREATED" and bundles
                and all(set(b) <= {"CPU", "GPU"} for b in bundles)):
            remove_group(pg_id)


def _scheduler(config: Config, max_t: int) -> Any:
    t = config.tune
    if t.scheduler == "none":
        return None
    # max_t one past the last evaluation: a trial that reaches the end finishes its Train run by itself
    # (ASHA would otherwise stop it at its last report, before Ray Train has wrapped up).
    return ray.tune.schedulers.ASHAScheduler(time_attr=TIME_ATTR, max_t=max_t + 1,
                                             grace_period=min(t.grace_period, max_t),
                                             reduction_factor=t.reduction_factor)


def _searcher(config: Config, first: list[dict[str, float]], limit: int) -> tuple[Any, int | None]:
    """The search algorithm and the ``max_concurrent_trials`` for Tune (grid/random limit it themselves)."""
    t = config.tune
    if t.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(points_to_evaluate=first or None, seed=t.seed), limit
    return ray.tune.search.BasicVariantGenerator(points_to_evaluate=first or None, random_state=t.seed,
                                                 max_concurrent=limit), None


def sweep_key(config: Config) -> str:
    c = config
    selection = (c.eval.every_steps, c.eval.select_on, c.eval.max_valid)
    tune = dataclasses.replace(c.tune, max_concurrent_trials=None)  # a resources setting, not a result
    return stage_key(c.data, c.teachers, c.student, c.train, selection, tune, prompts.TEACHER_TEMPLATE_VERSION)


def run_sweep(config: Config, run_dir: Path, examples: pa.Table, valid: list[Question]) -> dict[str, Any]:
    """Run (or resume) the sweep and export its best checkpoint on valid to ``<run>/student``.

    Returns what ``pipeline.run_student`` returns (steps, seconds, best step and valid accuracy, ...) plus
    ``tune`` (the report section) and ``loss_weights``/``lr`` of the exported trial.
    """
    key = sweep_key(config)
    export_dir = run_dir / runs.EXPORT_DIR
    if info := stages.finished(export_dir, key):
        log.info("tune: reusing the swept student in %s", export_dir)
        return info
    start = time.perf_counter()
    plan = make_plan(config, examples.num_rows)
    max_t = len(report_steps(plan))
    space, first = search_space(config)
    limit = concurrent_trials(config, ray.cluster_resources())
    # Tokenised once here, not per trial: the trials differ only in their loss weights.
    tokenized = tokenized_dataset(examples, config, sweep_tasks(config, examples), student_layout(config))
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, config=config, examples=examples, tokenized=tokenized,
                                 valid=list(valid), run_dir=str(run_dir)),
        # The driver function only waits on its TorchTrainer (the Train workers hold the CPUs); Tune needs a
        # non-empty request, so it asks for a little memory instead of a CPU.
        {"cpu": 0, "memory": 64 * 2**20},
    )
    sweep_dir = run_dir / "tune" / "sweep"
    if ray.tune.Tuner.can_restore(str(sweep_dir)):
        # Restoring unpickles Tune's saved state: only from directories no one else could have written.
        runs.check_trusted([run_dir, run_dir / "tune", sweep_dir, *sorted(sweep_dir.glob("*.pkl"))],
                           config.output.access, "resuming the sweep loads its saved state with pickle, which "
                           "can run code")
        log.info("tune: resuming the interrupted sweep in %s (finished trials are kept)", sweep_dir)
        tuner = ray.tune.Tuner.restore(str(sweep_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
    else:
        n = len(space["point"]["grid_search"]) * config.tune.num_samples if "point" in space else \
            config.tune.num_samples
        log.info("tune: %d trials (%s search, scheduler %s), at most %d at once, %d evaluations each", n,
                 config.tune.search, config.tune.scheduler, limit, max_t)
        search_alg, max_concurrent = _searcher(config, first, limit)
        tuner = ray.tune.Tuner(
            trainable,
            param_space=space,
            tune_config=ray.tune.TuneConfig(metric=SCORE, mode="max", scheduler=_scheduler(config, max_t),
                                            search_alg=search_alg, num_samples=config.tune.num_samples,
                                            max_concurrent_trials=max_concurrent),
            run_config=ray.tune.RunConfig(name="sweep", storage_path=str(run_dir / "tune"), verbose=1,
                                          failure_config=ray.tune.FailureConfig(max_failures=0),
                                          callbacks=[ReclaimStoppedTrainRuns()]),
        )
    grid = tuner.fit()
    time.sleep(1.0)  # let the last stopped trial's actors go first
    reclaim_train_groups()  # the sweep is over: nothing of it may hold CPUs the evaluation needs
    trials = collect_trials(grid, config, run_dir, max_t)
    best = best_trial(trials)
    if best is None:
        errors = "; ".join(f"{t['trial_id']}: {t['error']}" for t in trials if t.get("error"))
        raise RuntimeError(f"tune: no trial left a checkpoint ({errors or 'no trials ran'})")
    best_config = apply_point(config, best["point"])
    log.info("tune: best trial %s (%s) valid accuracy %.4f at step %s; exporting it to %s", best["trial_id"],
             format_point(best["point"]), best["valid_accuracy"], best["best_step"], export_dir)
    section = sweep_report(trials, best, config, max_t, limit)
    try:
        plot(trials, best, run_dir / PLOT_FILE)
        section["plot"] = PLOT_FILE
    except ImportError:
        log.warning("tune: matplotlib is not installed; no plot (pip install matplotlib)")
    info = {
        "key": key,
        "steps": best["steps"],
        "seconds": round(time.perf_counter() - start, 3),
        "final_metrics": best["final_metrics"],
        "best_step": best["best_step"],
        "best_valid_accuracy": best["valid_accuracy"],
        "checkpoint": f"{best['trial_id']}/{Path(best['checkpoint']).name}",
        "loss_weights": best_config.task_weights(),
        "lr": best_config.train.lr,
        "tune": section,
    }
    stages.export_checkpoint(best["checkpoint"], export_dir, info, runs.ACCESS_MODES[config.output.access])
    return info


def _checkpoints(train_dir: Path) -> list[dict[str, Any]]:
    """The complete checkpoints Ray Train kept for one trial, with their reported metrics."""
    found = []
    for metrics in sorted(train_dir.glob("student/checkpoint_step*/metrics.json")):
        if (metrics.parent / "config.json").is_file():
            found.append({**json.loads(metrics.read_text()), "path": str(metrics.parent)})
    return found


def collect_trials(grid: Any, config: Config, run_dir: Path, max_t: int) -> list[dict[str, Any]]:
    """One dict per trial: point, best valid accuracy, evaluations, steps, status, best kept checkpoint."""
    trials = []
    for result in grid:
        last = dict(result.metrics or {})
        named = re.search(r"([0-9a-f]{5}_\d{5})", Path(result.path).name) if result.path else None
        trial_id = last.get("trial_id") or (named.group(1) if named else None)
        frame = result.metrics_dataframe
        scores = [] if frame is None or SCORE not in frame else [float(v) for v in frame[SCORE].dropna()]
        evaluations = int(last.get(TIME_ATTR, 0) or 0)
        kept = _checkpoints(trial_dir(run_dir, trial_id) / "train") if trial_id else []
        top = max(kept, key=lambda c: (c[SCORE], c["step"]), default=None)
        if result.error:
            status = "error"
        elif evaluations >= max_t:
            status = "completed"
        else:
            status = "stopped early"
        trials.append({
            "trial_id": trial_id,
            "point": point_of(result.config or {}),
            "valid_accuracy": max(scores) if scores else last.get(SCORE),
            "evaluations": evaluations,
            "steps": int(last.get("step", 0) or 0),
            "status": status,
            "error": str(result.error).strip().splitlines()[-1] if result.error else None,
            "checkpoint": top["path"] if top else None,
            "best_step": top["step"] if top else None,
            "checkpoint_valid_accuracy": top[SCORE] if top else None,
            "final_metrics": {k: v for k, v in last.items()
                              if isinstance(v, (int, float, str)) and k not in ("config", PLACEMENT_GROUP)},
        })
    return sorted(trials, key=lambda t: t["trial_id"] or "")


def best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial whose kept checkpoint scored best on valid (ties: the earlier trial)."""
    with_checkpoint = [t for t in trials if t["checkpoint"]]
    if not with_checkpoint:
        return None
    best = max(with_checkpoint, key=lambda t: t["checkpoint_valid_accuracy"])
    return {**best, "valid_accuracy": best["checkpoint_valid_accuracy"]}


def format_point(point: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in point.items())


def sweep_report(trials: list[dict[str, Any]], best: dict[str, Any], config: Config, max_t: int,
                 concurrent: int) -> dict[str, Any]:
    """The ``tune`` section of ``report.json``."""
    t = config.tune
    keep = ("trial_id", "point", "valid_accuracy", "evaluations", "steps", "status", "error")
    return {
        "search": t.search,
        "scheduler": t.scheduler,
        "swept": list(swept_values(config)) + (["leave_one_teacher_out"] if t.leave_one_teacher_out else []),
        "max_concurrent_trials": concurrent,
        "evaluations_per_trial": max_t,
        "evaluations_total": sum(x["evaluations"] for x in trials),
        "trials": [{k: x[k] for k in keep} for x in trials],
        "best": {"trial_id": best["trial_id"], "point": best["point"], "valid_accuracy": best["valid_accuracy"],
                 "step": best["best_step"]},
    }


def plot(trials: list[dict[str, Any]], best: dict[str, Any], path: Path) -> None:
    """Valid accuracy against each swept weight, one panel per key; the exported trial is circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in trials[0]["point"] if len({x["point"].get(k) for x in trials}) > 1] or \
        list(trials[0]["point"])[:1]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys):
        for status, marker in (("completed", "o"), ("stopped early", "x"), ("error", "s")):
            shown = [x for x in trials if x["status"] == status and x["valid_accuracy"] is not None]
            if shown:
                ax.scatter([x["point"][key] for x in shown], [x["valid_accuracy"] for x in shown], marker=marker,
                           label=status)
        ax.scatter([best["point"][key]], [best["valid_accuracy"]], s=160, facecolors="none", edgecolors="red",
                   label="exported")
        ax.set_xlabel(key)
        if key == "lr":
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("valid accuracy (best of trial)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Loss-weight sweep", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
