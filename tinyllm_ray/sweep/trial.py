"""One trial of the sweep: the Tune driver function that trains the student with the trial's weights, the
Train->Tune reporter it passes to Ray Train, and where the trial keeps its Train run."""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import ray.tune
from ray.tune.integration.ray_train import TuneReportCallback

from tinyllm_ray import tracking
from tinyllm_ray.config import Config
from tinyllm_ray.data.schema import Question
from tinyllm_ray.student.batches import target_col
from tinyllm_ray.student.schedule import make_schedule
from tinyllm_ray.student.train import train_student
from tinyllm_ray.sweep.space import apply_point, point_of, report_steps

TIME_ATTR = "evaluations"  # valid scores so far in the trial's Train run: ASHA's clock


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


def run_trial(params: dict[str, Any], *, config: Config, examples: pa.Table, tokenized: ray.data.Dataset,
              valid: list[Question], run_dir: str) -> None:
    """The Tune driver function of one trial: fit the student's ``TorchTrainer`` with the trial's point. Its
    training scalars go to ``<trial>/tensorboard/student/`` and, with ``tracking.mlflow``, to the trial's MLflow
    run (``tracking.for_trial``)."""
    trial_config = apply_point(config, point_of(params))
    plan = make_schedule(trial_config, examples.num_rows)
    context = ray.tune.get_context()
    where = trial_dir(Path(run_dir), context.get_trial_id())
    # RunConfig(storage_path=<trial>/train, name="student"): a restarted trial resumes its own Train run.
    train_student(examples, trial_config, where, valid=valid, callbacks=[TuneReporter(report_steps(plan))],
                  tokenized=tokenized, tag_placement_group=True,
                  track=tracking.for_trial(trial_config, Path(run_dir), where, context.get_trial_name()))


def sweep_tasks(config: Config, examples: pa.Table) -> list[str]:
    """Every task some trial may train (any weight can be swept), as far as the rows have it."""
    return [t for t in config.task_weights() if target_col(t) in examples.column_names]
