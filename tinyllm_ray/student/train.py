"""The student stage on Ray Train, the driver's side: tokenised multi-task rows in, the best checkpoint on valid out.

``train_student`` tokenises the text rows with Ray Data (``tokenize`` in ``map_batches``, ``feed.py``), plans the
steps (``schedule.py``), then runs a ``TorchTrainer`` whose workers run ``worker.train_loop_per_worker``: each
streams its shard with ``get_dataset_shard("train")``, reshuffled every epoch (Ray Data's local shuffle buffer
seeded per epoch, or a global ``random_shuffle``), optionally length-bucketed, and trains the student (with
``compare: true`` also the baselines, other loss weights, on the same micro-batches: ``arms.py``).

Ray Train keeps the best ``train.keep_checkpoints`` checkpoints by ``valid_accuracy`` plus the latest, and
restarts a failed worker group from the latest (``FailureConfig``); names, layout and resume:
``checkpoints.py``. ``eval.every_steps`` adds reports without a checkpoint. ``fit_interruptibly`` runs the fit
so that Ctrl-C ends it as it ends every other stage.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray.data
import ray.train
import ray.train.torch

from tinyllm_ray import tracking
from tinyllm_ray.config import Config
from tinyllm_ray.data.schema import Question
from tinyllm_ray.student.arms import ARMS_DIR, BEST_DIR, STUDENT_ARM, trained_tasks
from tinyllm_ray.student.batches import student_layout
from tinyllm_ray.student.checkpoints import SCORE
from tinyllm_ray.student.faults import FailOnce
from tinyllm_ray.student.feed import tokenized_dataset
from tinyllm_ray.student.schedule import make_schedule
from tinyllm_ray.student.worker import LOOP_CONFIG, LoopConfig, train_loop_per_worker


def fit_interruptibly(trainer: ray.train.torch.TorchTrainer) -> ray.train.Result:
    """``trainer.fit()`` in a thread of its own while this one waits, so Ctrl-C reaches the run as it does every
    other stage (a ``KeyboardInterrupt`` here: one line, what is kept, the lock released). Called in the main
    thread, Ray Train installs its own SIGINT handler, which aborts the run and then exits the process with no
    word (measured with Ray 2.60: status 1, nothing printed). Interrupted, the driver leaves its Ray session (the
    run's controller and workers end with its job) and waits for the thread to return before it exits."""
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # noqa: BLE001 -- handed to the waiting thread as it is
            outcome["error"] = err

    thread = threading.Thread(target=fit, name="student-fit", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)  # a join with a timeout lets a signal's handler run in this thread
    except KeyboardInterrupt:
        # End the run's controller and workers with this driver's Ray session now, so the fit's wait returns
        # and no thread is inside Ray while the process exits (one that was crashed the exit: SIGSEGV).
        ray.shutdown()
        thread.join(30)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def train_student(examples: pa.Table, config: Config, run_dir: Path,
                  valid: list[Question] | None = None, callbacks: list[Any] | None = None,
                  tokenized: ray.data.Dataset | None = None, tag_placement_group: bool = False,
                  arms: dict[str, Config] | None = None, track: tracking.Tracking | None = None) -> dict[str, Any]:
    """Fit the student; returns {"checkpoint": best on valid, "latest", "steps", "seconds", "metrics",
    "best_metrics", "arms"}. ``callbacks``: Ray Train ``UserCallback``s for the run (a Tune sweep passes its
    Train->Tune reporter). ``tokenized``: ``examples`` already through ``tokenized_dataset`` (a sweep
    tokenises once for all its trials; columns of tasks this run does not train are ignored).
    ``tag_placement_group``: every report carries ``worker.PLACEMENT_GROUP`` (the workers' group id), so that a
    sweep can free the group of a trial it stopped at once. ``arms``: more students to train beside this one
    on the same batches (``arms.py``), by name; their configs may differ from ``config`` only in the loss
    weights. ``"arms"`` of the result: for each, {"checkpoint": its best on valid, "best_metrics"}. ``track``:
    where rank 0 records its scalars (default: ``tracking.for_run(config, run_dir)``, from ``config.tracking``)."""
    arms = dict(arms or {})
    for name, other in arms.items():
        if dataclasses.replace(other, train=config.train) != config or name == STUDENT_ARM:
            raise ValueError(f"arm {name!r} differs from the student in more than its loss weights")
    tasks = trained_tasks([config.task_weights(), *(a.task_weights() for a in arms.values())])
    tc = config.train
    start = time.perf_counter()
    dataset = tokenized if tokenized is not None else tokenized_dataset(examples, config, tasks,
                                                                         student_layout(config))
    if tc.shuffle == "global":
        dataset = dataset.random_shuffle()  # unseeded: a new order every epoch
    plan = make_schedule(config, examples.num_rows)
    valid = list(valid or [])[: config.eval.max_valid]
    loop = LoopConfig(config, plan, valid, {name: a.task_weights() for name, a in arms.items()},
                      FailOnce.from_env(), tag_placement_group,
                      track if track is not None else tracking.for_run(config, run_dir))
    trainer = ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={LOOP_CONFIG: loop},
        scaling_config=ray.train.ScalingConfig(
            num_workers=tc.num_workers, use_gpu=tc.use_gpu, resources_per_worker={"CPU": tc.cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name="student",
            storage_path=str((run_dir / "train").resolve()),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=tc.keep_checkpoints,
                                                         checkpoint_score_attribute=SCORE,
                                                         checkpoint_score_order="max"),
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
            callbacks=list(callbacks or []),
        ),
        datasets={"train": dataset},
    )
    result = fit_interruptibly(trainer)
    # Ray Train kept the best ``keep_checkpoints`` by valid accuracy (and the latest); of equals, the later step.
    kept = [(c, m) for c, m in result.best_checkpoints or [] if SCORE in m]
    best, best_metrics = max(kept, key=lambda cm: (cm[1][SCORE], cm[1]["step"]),
                             default=(result.checkpoint, result.metrics or {}))
    latest = Path(result.checkpoint.path)
    return {
        "checkpoint": best.path,
        "latest": str(latest),
        "arms": {name: {"checkpoint": str(latest / ARMS_DIR / name / BEST_DIR),
                        "best_metrics": json.loads((latest / ARMS_DIR / name / BEST_DIR / "metrics.json").read_text())}
                 for name in arms},
        "steps": int((result.metrics or best_metrics or {}).get("step", plan.total_steps)),
        "seconds": round(time.perf_counter() - start, 3),
        "metrics": dict(result.metrics or {}),
        "best_metrics": dict(best_metrics),
    }
