"""The models one Ray Train worker trains side by side: the student and, with ``compare: true``, its baselines.

An *arm* is the student model trained with its own loss weights: the run's student (arm 0) and, with
``compare: true``, the label-only and single-teacher baselines (``compare.py``). All arms of a run train in the
same worker group on the same micro-batches, each with its own optimizer and schedule. That makes the
comparison controlled (the arms differ only in their loss weights, not in their batches or their luck with the
shuffle) and costs one Ray Train start-up instead of one per baseline (six actors, 15-25 s on 2 CPU cores);
it multiplies the workers' model memory and step time by the number of arms, like training them one after
the other would.

Checkpoints: arm 0 is saved at the checkpoint's root and selected by Ray Train (``valid_accuracy``). Each
other arm is saved under ``arms/<name>/`` (its weights and ``train_state.pt``, to resume) and its best weights on
valid so far under ``arms/<name>/best/``, chosen the same way as arm 0's (the highest valid accuracy at a
checkpoint step, of equals the later), so the latest checkpoint holds every arm's selection.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tinyllm_ray.devices import bf16_autocast
from tinyllm_ray.markers import ARMS_DIR, STATE_FILE
from tinyllm_ray.student.loss import multitask_loss
from tinyllm_ray.student.model import NO_TASK, unwrap

STUDENT_ARM = "student"  # arm 0: the run's own student (also its name among the models evaluated together)


def trained_tasks(weights: Iterable[Mapping[str, float]]) -> list[str]:
    """Every task some arm trains (a non-zero weight in its ``task_weights``), in first-seen order: the tasks the
    run's rows and batches carry; each arm's ``MultiTask`` reads its own."""
    return list(dict.fromkeys(t for w in weights for t, v in w.items() if v != 0))
BEST_DIR = "best"
# ARMS_DIR (arms/<name>/ in a checkpoint) and STATE_FILE (train_state.pt) live with the export that leaves them out


@dataclasses.dataclass
class Arm:
    """One model in training: its loss weights, the prepared (DDP/FSDP) ``MultiTask`` module, its optimizer
    and scheduler, the running loss of the current step, and (arms after the first) its best on valid."""

    name: str
    weights: dict[str, float]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    # The running loss of the step and the latest loss of each task stay tensors on the device: read as
    # numbers only when a step is logged or reported (``as_numbers``), not once per micro-batch and task.
    step_loss: torch.Tensor | None = None
    last: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    best: tuple[float, int] | None = None  # (valid accuracy, step) of ``best_weights``
    best_weights: dict[str, torch.Tensor] | None = None  # full weights on CPU (rank 0), the selection so far

    def backward(self, batch: dict[str, Any], window: int, sync: bool, device: torch.device, bf16: bool) -> None:
        """Forward and backward of one micro-batch, its loss divided by its accumulation window's size;
        DDP syncs gradients only when ``sync`` (the window's last micro-batch)."""
        no_sync = getattr(self.model, "no_sync", None)
        with no_sync() if no_sync is not None and not sync else contextlib.nullcontext():
            with bf16_autocast(device, bf16):
                losses = self.model(batch)
            loss = losses[NO_TASK] if NO_TASK in losses else multitask_loss(losses, self.weights)
            (loss / window).backward()
        part = loss.detach() / window
        self.step_loss = part if self.step_loss is None else self.step_loss + part
        self.last.update({t: v.detach() for t, v in losses.items() if t != NO_TASK})

    def optimizer_step(self, max_grad_norm: float) -> torch.Tensor:
        """Clip, step the optimizer and the schedule; returns the step's loss (a tensor on the device: no sync)
        and starts the next one's. FSDP clips with its own ``clip_grad_norm_``, whose norm spans every rank's
        shard; ``torch.nn.utils.clip_grad_norm_`` on sharded parameters would clip each rank by its shard's norm."""
        fsdp_clip = getattr(self.model, "clip_grad_norm_", None)
        if fsdp_clip is not None:
            fsdp_clip(max_grad_norm)
        else:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss, self.step_loss = self.step_loss, None
        return loss if loss is not None else torch.zeros(())

    def task_losses(self) -> dict[str, float]:
        """The latest loss of each task, as numbers (one sync: call it when logging or reporting)."""
        return as_numbers(self.last)

    def consider(self, accuracy: float, step: int, weights: Callable[[], dict[str, torch.Tensor]]) -> None:
        """Keep ``weights()`` (a copy of this arm's full weights now, made only then) as its selection when
        ``accuracy`` is at least the best so far (of equals, the later step wins, as for arm 0)."""
        if self.best is None or accuracy >= self.best[0]:
            self.best = (accuracy, step)
            self.best_weights = weights()

    def state(self) -> dict[str, Any]:
        """What ``train_state.pt`` holds besides the optimizer: the schedule and the selection so far."""
        return {"scheduler": self.scheduler.state_dict(), "best": list(self.best) if self.best else None}

    def save_best(self, directory: Path, tokenizer: Any) -> None:
        """``directory``: the selected weights so far, loadable with ``from_pretrained``."""
        if self.best_weights is not None:
            unwrap(self.model).save_pretrained(directory, state_dict=self.best_weights)
            tokenizer.save_pretrained(directory)


def adamw(module: torch.nn.Module, lr: float, weight_decay: float = 0.0, strategy: str = "ddp"
          ) -> torch.optim.AdamW:
    """The arms' optimizer: AdamW with fp32 state, fused (one kernel for every parameter, no per-parameter host
    read of the step count) on the CPU and CUDA; FSDP keeps torch's default (its sharded parameters)."""
    fused = strategy != "fsdp" and all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32
                                       for p in module.parameters())
    return torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay, fused=fused or None)


def checkpoint_problem(directory: Path, arms: Sequence[str] = (STUDENT_ARM,), state: bool = True) -> str | None:
    """Why a checkpoint directory would not load (a weights file cut short, a missing or unreadable state file, an
    arm without its files), or None. Reads every weights file's header (``safetensors`` checks that the file
    covers it) and, with ``state``, loads each state file: what loading it for training needs."""
    import safetensors

    for name in arms:
        where = directory if name == STUDENT_ARM else directory / ARMS_DIR / name
        weights = sorted(where.glob("*.safetensors"))
        if not (where / "config.json").is_file() or not weights:
            return f"{where} has no model files"
        for path in weights:
            try:
                with safetensors.safe_open(str(path), "pt"):
                    pass
            except (OSError, safetensors.SafetensorError) as err:
                return f"{path}: {err}"
        if state:
            try:
                load_state(where)
            except (OSError, RuntimeError, EOFError, ValueError) as err:
                return f"{where / STATE_FILE}: {type(err).__name__}: {err}"
    return None


def load_state(directory: Path) -> dict[str, Any]:
    """A checkpoint's ``train_state.pt``, on the CPU whatever device saved it: with several workers per node,
    loading rank 0's AdamW state onto the GPU it was saved from would put every rank's copy on that one GPU (or
    fail where the placement changed after a restart); ``load_state_dict`` then moves it to each parameter's device."""
    return torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)


def as_numbers(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar tensors (on any device) as numbers, with one device->host copy for all of them."""
    if not values:
        return {}
    return dict(zip(values, torch.stack([v.float() for v in values.values()]).tolist()))


def cpu_copy(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CPU copy of a state dict in which tensors that shared storage (tied embeddings) still share it, so
    ``save_pretrained`` saves them once."""
    copies: dict[tuple[Any, ...], torch.Tensor] = {}
    out = {}
    for key, tensor in weights.items():
        same = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if same not in copies:
            copies[same] = tensor.detach().to("cpu", copy=True)
        out[key] = copies[same]
    return out
