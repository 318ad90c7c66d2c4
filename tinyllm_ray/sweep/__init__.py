"""The sweep: Ray Tune over the loss weights (gamma, each alpha_i) and optionally the learning rate.

    python jobs/distill.py --config configs/quickstart-sweep.yaml

Ray 2.60's Train V2 pattern: every Tune trial runs a driver function (``trial.run_trial``) that builds the
student's ``TorchTrainer`` with the trial's weights (``student.train.train_student``) and fits it; a Train
callback (``trial.TuneReporter``, Ray's ``TuneReportCallback`` plus an ``evaluations`` counter) passes every
valid score to Tune, where ASHA stops weak trials early (``placement.ReclaimStoppedTrainRuns`` frees a stopped
trial's workers at once). Every trial reads the one rationale store (teachers ran once, before the sweep)
through one tokenised Ray Dataset (tokenised once, before the first trial), runs as many at once as the CPUs
(GPUs) hold Train worker groups, and keeps its Ray Train run in ``<run>/tune/trials/<trial id>/``; Tune's own
state is in ``<run>/tune/sweep/``. A resubmitted run with the same run directory restores that state
(``Tuner.restore``): finished trials are not rerun, an interrupted one resumes from its latest Train checkpoint.

After the sweep the best checkpoint on valid over all trials becomes the run's student (no retraining);
``report.sweep_report`` lists every trial for ``report.json``/``report.md`` and ``report.plot`` draws valid
accuracy against the weights.

Modules: ``space`` (swept values, trial points, Tune's search space, concurrency), ``trial`` (one trial's
driver function and reporter), ``placement`` (freeing stopped trials' placement groups), ``report`` (trials,
best trial, report section, plot), ``run`` (``run_sweep``).
"""

from tinyllm_ray.sweep.placement import ReclaimStoppedTrainRuns, reclaim_train_groups, remove_group
from tinyllm_ray.sweep.report import PLOT_FILE, best_trial, collect_trials, plot, sweep_report
from tinyllm_ray.sweep.run import make_scheduler, make_searcher, run_sweep
from tinyllm_ray.sweep.space import (
    apply_point,
    base_point,
    concurrent_trials,
    format_point,
    grid_points,
    leave_one_out_points,
    point_of,
    report_steps,
    search_space,
    swept_values,
)
from tinyllm_ray.sweep.trial import TIME_ATTR, TuneReporter, run_trial, sweep_tasks, trial_dir

__all__ = [
    "PLOT_FILE", "TIME_ATTR", "ReclaimStoppedTrainRuns", "TuneReporter", "apply_point", "base_point",
    "best_trial", "collect_trials", "concurrent_trials", "format_point", "grid_points", "leave_one_out_points",
    "make_scheduler", "make_searcher", "plot", "point_of", "reclaim_train_groups", "remove_group", "report_steps",
    "run_sweep", "run_trial", "search_space", "sweep_report", "sweep_tasks", "swept_values",
    "trial_dir",
]
