"""The student run's checkpoints: their names and layout, which one a run resumes from, and a worker's arms
written to and loaded from them.

Every ``train.checkpoint_every`` steps (default: every epoch) a checkpoint (model, tokenizer, optimizer,
scheduler, step) is reported with ``valid_accuracy`` (``SCORE``) and ``step`` into
``<storage>/checkpoint_step<step, 7 digits>/``; Ray Train keeps the best ``train.keep_checkpoints`` by
``SCORE`` plus the latest. The student (arm 0) is at the checkpoint's root, every other arm under
``arms/<name>/`` with its selection so far in ``best/`` (``arms.py``). A restarted worker group
(``FailureConfig``) or a resubmitted job resumes from the latest checkpoint that loads (``resume_point``): it
skips the micro-batches the checkpointed steps consumed in that epoch, so at most ``checkpoint_every`` steps
are redone. On one worker with the local shuffle the skipped rows are exactly the ones trained on; with
several workers Ray Data may deal the blocks to the workers in another order, so the count is exact and the
rows may differ.

Under FSDP with several workers (``fsdp``) the full weights and optimizer state are gathered to rank 0's CPU
to save, and the full optimizer state is scattered back on load: every rank takes part in both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import ray.train
import torch

from tinyllm_ray import console
from tinyllm_ray.student.arms import ARMS_DIR, BEST_DIR, STATE_FILE, STUDENT_ARM, Arm, checkpoint_problem, cpu_copy
from tinyllm_ray.student.model import load_student, unwrap

log = logging.getLogger("tinyllm_ray.student")
SCORE = "valid_accuracy"  # the report key Ray Train ranks checkpoints by
CHECKPOINT_PREFIX = "checkpoint_step"  # checkpoint_step0000012: names sort by step


def checkpoint_dir_name(step: int) -> str:
    """The name of step ``step``'s checkpoint in the run's storage."""
    return f"{CHECKPOINT_PREFIX}{step:07d}"


def arm_dir(checkpoint: Path, name: str) -> Path:
    """Where arm ``name`` lives in a checkpoint directory: arm 0 at its root, the others under ``arms/``."""
    return checkpoint if name == STUDENT_ARM else checkpoint / ARMS_DIR / name


def saved_arm(checkpoint: Path | None, name: str) -> Path | None:
    """Arm ``name``'s directory in ``checkpoint`` (None: no checkpoint, the arm starts from the student model);
    raises when the checkpoint holds no state for it."""
    if checkpoint is None:
        return None
    where = arm_dir(checkpoint, name)
    if not (where / STATE_FILE).is_file():
        raise RuntimeError(f"checkpoint {checkpoint} holds no state for {name!r}: it was written by another set of "
                           f"arms; train into a new run directory")
    return where


def older_checkpoints(checkpoint: ray.train.Checkpoint) -> list[ray.train.Checkpoint]:
    """The checkpoints beside ``checkpoint`` in the run's storage (any filesystem Ray Train writes to) with an
    earlier step, newest first: where a run resumes when its latest checkpoint does not load."""
    import posixpath

    import pyarrow.fs

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    try:
        found = fs.get_file_info(pyarrow.fs.FileSelector(posixpath.dirname(path)))
    except OSError:
        return []
    name = posixpath.basename(path)
    older = sorted((i.path for i in found if i.type == pyarrow.fs.FileType.Directory
                    and posixpath.basename(i.path).startswith(CHECKPOINT_PREFIX)
                    and posixpath.basename(i.path) < name), reverse=True)
    return [ray.train.Checkpoint(path=p, filesystem=fs) for p in older]


@contextlib.contextmanager
def resume_point(checkpoint: ray.train.Checkpoint | None, arms: list[str], announce: bool = True
                 ) -> Iterator[str | None]:
    """The local directory of the newest checkpoint that loads (``arms.checkpoint_problem``): Ray Train's latest,
    else the ones before it; a damaged one is skipped with a warning naming it (on the driver's console too when
    ``announce``: rank 0). None: train from the start."""
    say = console.remote_event if announce else (lambda text: None)
    if checkpoint is None:
        yield None
        return
    for candidate in [checkpoint, *older_checkpoints(checkpoint)]:
        with contextlib.ExitStack() as stack:
            try:
                directory = stack.enter_context(candidate.as_directory())
                problem = checkpoint_problem(Path(directory), arms)
            except OSError as err:
                problem = str(err)
            if problem is None:
                if candidate is not checkpoint:
                    say(f"resuming from {candidate.path}: the checkpoints after it do not load")
                yield directory
                return
            log.warning("checkpoint %s does not load (%s); trying the one before it", candidate.path, problem)
            say(f"checkpoint {candidate.path} does not load ({problem}); skipped")
    say("no checkpoint of this run loads: training starts from the student model again")
    yield None


def upload_mode(device: torch.device) -> ray.train.CheckpointUploadMode:
    """How a checkpoint reaches the run's storage: in the background on GPU workers, which go on training while a
    large checkpoint (full weights and AdamW state) is copied, instead of every GPU idling through the copy; in
    line on CPU workers. The cost of the background copy: a worker group that fails while it is under way
    resumes from the checkpoint before it (``checkpoint_every`` more steps redone)."""
    return ray.train.CheckpointUploadMode.ASYNC if device.type == "cuda" else ray.train.CheckpointUploadMode.SYNC


class WorkerCheckpoints:
    """One Ray Train worker's side of the checkpoints: an arm's optimizer, schedule and selection loaded from
    one, its full weights gathered, the checkpoint files written (rank 0) and reported to Ray Train."""

    def __init__(self, tokenizer: Any, rank: int, fsdp: bool, device: torch.device, trust_remote_code: bool):
        self.tokenizer, self.rank, self.fsdp, self.device = tokenizer, rank, fsdp, device
        self.trust_remote_code = trust_remote_code

    def restore(self, arm: Arm, where: Path, saved: dict[str, Any]) -> None:
        """Load ``arm``'s optimizer and schedule from ``saved`` (its ``train_state.pt``) and, on rank 0, its
        selection so far from ``where / best``."""
        self._load_optimizer(arm, saved["optimizer"])
        arm.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("best") and self.rank == 0:
            arm.best = (float(saved["best"][0]), int(saved["best"][1]))
            arm.best_weights = cpu_copy(load_student(str(where / BEST_DIR), self.trust_remote_code).state_dict())

    def _load_optimizer(self, arm: Arm, saved: dict) -> None:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(arm.model, arm.optimizer, saved, options=StateDictOptions(full_state_dict=True))
        else:
            arm.optimizer.load_state_dict(saved)

    def full_weights(self, arm: Arm) -> dict[str, torch.Tensor]:
        """The arm's full weights (FSDP gathers them to rank 0's CPU: every rank must call it)."""
        if not self.fsdp:
            return unwrap(arm.model).state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return {k.removeprefix("model."): v for k, v in get_model_state_dict(arm.model, options=full).items()}

    def _full_optimizer(self, arm: Arm) -> dict[str, Any]:
        if not self.fsdp:
            return arm.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(arm.model, arm.optimizer, options=full)

    def save(self, directory: Path, arms: Sequence[Arm], weights: dict[str, dict[str, torch.Tensor]],
             step: int) -> bool:
        """Write the checkpoint files (rank 0): arm 0 at the root, the others under ``arms/<name>/`` with their
        selection so far in ``best/``; ``weights``: each arm's ``full_weights``. Every rank must call it."""
        saved = False
        for arm in arms:
            optimizer = self._full_optimizer(arm)
            if self.rank != 0:
                continue
            where = arm_dir(directory, arm.name)
            where.mkdir(parents=True, exist_ok=True)
            unwrap(arm.model).save_pretrained(where, state_dict=weights[arm.name] if self.fsdp else None)
            self.tokenizer.save_pretrained(where)
            torch.save({"optimizer": optimizer, "step": step, **arm.state()}, where / STATE_FILE)
            if arm.name != STUDENT_ARM:
                arm.save_best(where / BEST_DIR, self.tokenizer)
                (where / BEST_DIR / "metrics.json").write_text(json.dumps(
                    {"step": arm.best[1], SCORE: arm.best[0]} if arm.best else {}))
            saved = True
        return saved

    def report(self, result: dict[str, Any], arms: Sequence[Arm], weights: dict[str, dict[str, torch.Tensor]],
               step: int) -> None:
        """``ray.train.report`` of ``result`` with step ``step``'s checkpoint. It is written to a local directory,
        which Ray Train uploads to the run's storage (in the background on GPU workers, ``upload_mode``) and then
        deletes. Every rank must call it."""
        tmp = Path(tempfile.mkdtemp(prefix="tinyllm-checkpoint-"))
        saved = self.save(tmp, arms, weights, step)
        if saved:
            (tmp / "metrics.json").write_text(json.dumps(result))
        else:
            tmp.rmdir()  # this rank wrote nothing (only rank 0 writes); the empty directory is ours
        ray.train.report(result, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)) if saved else None,
                         checkpoint_dir_name=checkpoint_dir_name(step),
                         checkpoint_upload_mode=upload_mode(self.device), delete_local_checkpoint_after_upload=True)
