"""The sweep's experiment tracking: an MLflow run per trial through Ray Tune's own ``MLflowLoggerCallback``.

Ray Tune writes TensorBoard files of every trial's reports by itself; with ``tracking.mlflow`` each trial also
gets an MLflow run, named as the trial and tagged so that the trial's Train workers log into the same run
(``tracking.for_trial``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyllm_ray import tracking
from tinyllm_ray.config import Config
from tinyllm_ray.sweep.space import apply_point, point_of


def sweep_callbacks(config: Config, run_dir: Path) -> list[Any]:
    """Ray Tune callbacks of a sweep's tracking: ``SweepMlflow`` with ``tracking.mlflow``. (Ray Tune writes
    TensorBoard files of every trial's reports by itself, ``TBXLoggerCallback``, into ``<run>/tune/sweep/``.)"""
    if config.tracking.mlflow is None:
        return []
    return [sweep_mlflow(config, run_dir)]


def sweep_mlflow(config: Config, run_dir: Path) -> Any:
    """Ray's ``MLflowLoggerCallback`` for a sweep: an MLflow run per trial (named as the trial, tagged
    ``trial_name`` and ``tinyllm_run``) with the trial's point, the parameters of its config (``run_params``)
    and every Tune report as metrics (step: Tune's report count)."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    settings = config.tracking.mlflow
    uri = tracking.mlflow_uri(config, run_dir)
    tracking.allow_file_store(uri)

    class SweepMlflow(MLflowLoggerCallback):
        def setup(self, *args: Any, **kwargs: Any) -> None:
            tracking.allow_file_store(uri)  # a restored sweep's driver may be a new process
            super().setup(*args, **kwargs)

        def log_trial_start(self, trial: Any) -> None:
            new = trial not in self._trial_runs
            super().log_trial_start(trial)
            if new:
                self.mlflow_util.log_params(params_to_log=tracking.run_params(apply_point(config, point_of(trial.config))),
                                            run_id=self._trial_runs[trial])

    return SweepMlflow(uri, experiment_name=settings.experiment,
                       tags={**settings.tags, tracking.RUN_TAG: tracking.run_tag(run_dir)})
