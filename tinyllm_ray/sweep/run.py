"""Running the sweep: its stage key, ASHA and the search algorithm, and ``run_sweep``, which runs or resumes
Tune and exports the best trial's checkpoint as the run's student.

Tracking: Ray Tune writes TensorBoard files of every trial's reports into ``<run>/tune/sweep/<trial dir>/``
(its ``TBXLoggerCallback``); each trial's Train run adds its per-step scalars in
``<run>/tune/trials/<trial id>/tensorboard/student/``; with ``tracking.mlflow`` Ray's ``MLflowLoggerCallback``
opens an MLflow run per trial (``trial_tracking.sweep_callbacks``). A resumed sweep keeps the callbacks it was started
with (Tune restores them): MLflow turned on at the resume is then recorded by the trials' Train workers only."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import ray.tune

from tinyllm_ray import console, markers, resources, runs
from tinyllm_ray.config import Config
from tinyllm_ray.data.schema import Question
from tinyllm_ray.student.batches import student_layout
from tinyllm_ray.student.checkpoints import SCORE
from tinyllm_ray.student.feed import tokenized_dataset
from tinyllm_ray.student.schedule import make_schedule
from tinyllm_ray.sweep.placement import ReclaimStoppedTrainRuns, reclaim_train_groups
from tinyllm_ray.sweep.report import PLOT_FILE, best_trial, collect_trials, plot, sweep_report
from tinyllm_ray.sweep.space import (
    apply_point,
    concurrent_trials,
    format_point,
    report_steps,
    search_space,
    trial_count,
)
from tinyllm_ray.sweep.trial import TIME_ATTR, run_trial, sweep_tasks
from tinyllm_ray.sweep.trial_tracking import sweep_callbacks

log = logging.getLogger("tinyllm_ray.sweep")


def make_scheduler(config: Config, max_t: int) -> Any:
    """ASHA on the trials' evaluation count, or None with ``scheduler: none``."""
    t = config.tune
    if t.scheduler == "none":
        return None
    # max_t one past the last evaluation: a trial that reaches the end finishes its Train run by itself
    # (ASHA would otherwise stop it at its last report, before Ray Train has wrapped up).
    return ray.tune.schedulers.ASHAScheduler(time_attr=TIME_ATTR, max_t=max_t + 1,
                                             grace_period=min(t.grace_period, max_t),
                                             reduction_factor=t.reduction_factor)


def make_searcher(config: Config, first: list[dict[str, float]], limit: int) -> tuple[Any, int | None]:
    """The search algorithm and the ``max_concurrent_trials`` for Tune (grid/random limit it themselves)."""
    t = config.tune
    if t.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(points_to_evaluate=first or None, seed=t.seed), limit
    return ray.tune.search.BasicVariantGenerator(points_to_evaluate=first or None, random_state=t.seed,
                                                 max_concurrent=limit), None


class SweepProgress(ray.tune.Callback):
    """The sweep's trials on the driver's console board (``console.py``): finished / total, running, failed."""

    TASK = "sweep"

    def __init__(self, total: int):
        self.total = total

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        board = console.board()  # read each time: a restored sweep's callbacks were pickled without it
        if board is None:
            return
        status = [t.status for t in trials]
        board.update(self.TASK, done=status.count("TERMINATED"), total=max(self.total, len(trials)), unit="trials",
                     extra=f"{status.count('RUNNING')} running, {status.count('ERROR')} failed")


def run_sweep(config: Config, run_dir: Path, examples: pa.Table, valid: list[Question], key: str) -> dict[str, Any]:
    """Run (or resume) the sweep and export its best checkpoint on valid to ``<run>/student`` (a finished sweep is
    reused by the caller: ``workflow.student_stage``).

    Returns the figures of a ``results.StudentResult`` (steps, seconds, best step and valid accuracy, ...) plus
    ``tune`` (the report section) and ``loss_weights``/``lr`` of the exported trial. ``key``: the sweep's stage
    key (``keys.sweep_key``).
    """
    export_dir = run_dir / runs.EXPORT_DIR
    start = time.perf_counter()
    plan = make_schedule(config, examples.num_rows)
    max_t = len(report_steps(plan))
    space, first = search_space(config)
    limit = concurrent_trials(config, resources.capacity_now())
    # Tokenised once here, not per trial: the trials differ only in their loss weights.
    tokenized = tokenized_dataset(examples, config, sweep_tasks(config, examples), student_layout(config))
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(run_trial, config=config, examples=examples, tokenized=tokenized,
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
        n = trial_count(config)
        log.info("tune: %d trials (%s search, scheduler %s), at most %d at once, %d evaluations each", n,
                 config.tune.search, config.tune.scheduler, limit, max_t)
        search_alg, max_concurrent = make_searcher(config, first, limit)
        tuner = ray.tune.Tuner(
            trainable,
            param_space=space,
            tune_config=ray.tune.TuneConfig(metric=SCORE, mode="max", scheduler=make_scheduler(config, max_t),
                                            search_alg=search_alg, num_samples=config.tune.num_samples,
                                            max_concurrent_trials=max_concurrent),
            run_config=ray.tune.RunConfig(name="sweep", storage_path=str(run_dir / "tune"),
                                          verbose=0 if console.quiet() else 1,  # quiet: the board shows trials
                                          failure_config=ray.tune.FailureConfig(max_failures=0),
                                          callbacks=[ReclaimStoppedTrainRuns(), SweepProgress(trial_count(config)),
                                                     *sweep_callbacks(config, run_dir)]),
        )
    grid = tuner.fit()
    if console.board() is not None:
        console.board().finish(SweepProgress.TASK)
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
    markers.export_checkpoint(best["checkpoint"], export_dir, info, runs.ACCESS_MODES[config.output.access])
    return info
