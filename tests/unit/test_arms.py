"""Arms (tinyllm_ray.student.arms): students trained side by side on the same micro-batches, each by its own
loss weights; a baseline's selection on valid and its saved copy (no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tests.helpers import gpu_check
from tests.unit.test_train_steps import rows, take
from tinyllm_ray.student.arms import Arm, cpu_copy
from tinyllm_ray.student.batches import collate
from tinyllm_ray.student.model import MultiTask, load_student

TASKS = ["answer", "reference"]


def arm(student_dir: Path, name: str, weights: dict[str, float]) -> Arm:
    torch.manual_seed(0)
    model = MultiTask(load_student(str(student_dir)), "seq2seq", [t for t, w in weights.items() if w])
    model.eval()  # no dropout: the two arms' losses on the same batch are comparable
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return Arm(name, weights, model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0))


def test_each_arm_learns_from_its_own_weights_on_the_same_batch(tiny_models: Path) -> None:
    student_dir = tiny_models / "student-t5"
    batch = collate(take(rows(student_dir, "seq2seq"), list(range(4))), TASKS, 0)
    tinyllm = arm(student_dir, "student", {"answer": 1.0, "reference": 0.5})
    label_only = arm(student_dir, "label-only", {"answer": 1.0, "reference": 0.0})
    for a in (tinyllm, label_only):
        a.backward(batch, window=1, sync=True, device=torch.device("cpu"), bf16=False)
    # the same start and batch: the same answer loss; each step's loss is its own weighted sum
    # (to rounding: the TinyLLM arm's one pass encodes the answer rows stacked with the rationale rows)
    assert tinyllm.last["answer"].item() == pytest.approx(label_only.last["answer"].item(), rel=1e-6)
    assert tinyllm.step_loss == pytest.approx(tinyllm.last["answer"] + 0.5 * tinyllm.last["reference"])
    assert label_only.step_loss == pytest.approx(label_only.last["answer"]) and "reference" not in label_only.last
    before = [p.detach().clone() for p in label_only.model.parameters()]
    assert tinyllm.optimizer_step(1.0) > label_only.optimizer_step(1.0) > 0
    assert tinyllm.step_loss is None and label_only.step_loss is None  # the next step starts from nothing
    moved = [not torch.equal(b, p) for b, p in zip(before, label_only.model.parameters())]
    assert any(moved)
    # the rationale task moved the TinyLLM arm elsewhere than the label-only one
    assert any(not torch.equal(p, q) for p, q in zip(tinyllm.model.parameters(), label_only.model.parameters()))


def test_a_training_step_reads_nothing_back_from_the_device(tiny_models: Path) -> None:
    """Two accumulated micro-batches and an optimizer step of two arms (losses, per-task losses, clipping) make
    no device->host read; the losses are read once, together, when a step is logged (``task_losses``)."""
    student_dir = tiny_models / "student-t5"
    data = rows(student_dir, "seq2seq")
    batches = [collate(take(data, idx), TASKS, 0) for idx in ([0, 1, 2, 3], [4, 5, 6, 7])]
    arms = [arm(student_dir, "student", {"answer": 1.0, "reference": 0.5}),
            arm(student_dir, "label-only", {"answer": 1.0, "reference": 0.0})]
    with gpu_check().ProjectReads() as reads:
        for micro, batch in enumerate(batches):
            for a in arms:
                a.backward(batch, window=2, sync=micro == 1, device=torch.device("cpu"), bf16=False)
        losses = [a.optimizer_step(1.0) for a in arms]
    assert reads.count == 0
    assert all(isinstance(loss, torch.Tensor) for loss in losses)
    with gpu_check().ProjectReads() as reads:
        logged = arms[0].task_losses()
    assert set(logged) == {"answer", "reference"} and reads.count == 1


def test_a_baseline_keeps_its_best_on_valid_the_later_of_equals(tiny_models: Path) -> None:
    a = arm(tiny_models / "student-t5", "label-only", {"answer": 1.0})
    copied: list[int] = []

    def weights(step: int) -> dict:
        copied.append(step)
        return {"step": torch.tensor(step)}

    for accuracy, step in ((0.25, 2), (0.5, 4), (0.25, 6), (0.5, 8), (0.125, 10)):
        a.consider(accuracy, step, lambda step=step: weights(step))
    assert a.best == (0.5, 8) and int(a.best_weights["step"]) == 8
    assert copied == [2, 4, 8]  # weights are copied only when they become the selection
    assert a.state()["best"] == [0.5, 8]


def test_the_saved_selection_loads_with_its_tied_weights(tiny_models: Path, tmp_path: Path) -> None:
    student_dir = tiny_models / "student-t5"
    a = arm(student_dir, "label-only", {"answer": 1.0})
    hf = a.model.model
    weights = cpu_copy(hf.state_dict())
    tied = [k for k in weights if k.endswith("embed_tokens.weight")]
    assert tied and all(weights[k].data_ptr() == weights["shared.weight"].data_ptr() for k in tied)  # still tied
    a.consider(0.5, 2, lambda: weights)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(1.0)  # training goes on after the selection
    a.save_best(tmp_path / "best", AutoTokenizer.from_pretrained(student_dir))
    loaded = load_student(str(tmp_path / "best")).state_dict()
    original = load_student(str(student_dir)).state_dict()
    assert loaded.keys() == original.keys()
    assert all(torch.equal(loaded[k], original[k]) for k in original)  # the selected weights, not the latest



def test_a_checkpoint_that_would_not_load_is_named_with_its_file(tmp_path) -> None:
    import torch

    from tinyllm_ray.student.arms import ARMS_DIR, STATE_FILE, checkpoint_problem
    from tinyllm_ray.tiny import _teacher

    good = tmp_path / "checkpoint_step0000002"
    _teacher("teacher-a", 64).save_pretrained(good)
    torch.save({"step": 2}, good / STATE_FILE)
    assert checkpoint_problem(good) is None
    weights = good / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # cut short, as a full disk leaves it
    assert str(weights) in checkpoint_problem(good)
    other = tmp_path / "checkpoint_step0000004"
    _teacher("teacher-a", 64).save_pretrained(other)
    assert STATE_FILE in checkpoint_problem(other)  # no optimizer and schedule state
    assert checkpoint_problem(other, state=False) is None  # an export needs only the weights
    torch.save({"step": 4}, other / STATE_FILE)
    assert "has no model files" in checkpoint_problem(other, ["student", "label-only"])  # an arm missing
    assert checkpoint_problem(other, ["student"]) is None and (other / ARMS_DIR).exists() is False
