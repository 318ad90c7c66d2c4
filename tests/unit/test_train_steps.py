"""The multi-task forward on a tiny T5: accumulation equals one larger batch; one-encoder decoding equals a
plain forward of the same decoder inputs (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tinyllm_ray.data.synthetic import generate
from tinyllm_ray.student.batches import Tokenize, collate, example_table
from tinyllm_ray.student.loss import multitask_loss
from tinyllm_ray.student.model import NO_TASK, MultiTask, encode_questions, load_student, task_logits
from tinyllm_ray.student.schedule import Schedule


@pytest.fixture(scope="module")
def student_dir(tiny_models: Path) -> Path:
    return tiny_models / "student-t5"  # the session's build (tests/conftest.py)


def rows(student_dir: Path, layout: str, n: int = 40) -> dict:
    questions = generate(n, 1, 1, seed=3)["train"]
    refs = {"reference": {q.id: q.reference_rationale for q in questions}}
    udf = Tokenize(str(student_dir), ["answer", "reference"], 64, 24, layout=layout)
    return udf({k: np.asarray(v) for k, v in example_table(questions, refs).to_pydict().items()})


def take(batch: dict, idx: list[int]) -> dict:
    return {k: [v[i] for i in idx] for k, v in batch.items()}


def grads(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


def test_accumulated_micro_batches_give_the_gradient_of_one_batch(student_dir: Path) -> None:
    tokenized = rows(student_dir, "seq2seq")
    # four rows whose targets have equal token counts per task, so the per-batch token means agree
    by_len: dict[tuple, list[int]] = {}
    for i in range(len(tokenized["id"])):
        by_len.setdefault((len(tokenized["labels__answer"][i]), len(tokenized["labels__reference"][i])), []).append(i)
    idx = next(v for v in by_len.values() if len(v) >= 4)[:4]
    tasks, weights = ["answer", "reference"], {"answer": 1.0, "reference": 0.5}
    torch.manual_seed(0)
    model = MultiTask(load_student(str(student_dir)), "seq2seq", tasks)

    model.zero_grad()
    multitask_loss(model(collate(take(tokenized, idx), tasks, 0)), weights).backward()
    full = grads(model).clone()

    plan = Schedule(micro_per_epoch=2, accum=2, epochs=1, checkpoint_every=None, eval_every=None)
    model.zero_grad()
    for micro, part in enumerate([idx[:2], idx[2:]]):  # what the train loop does per micro-batch
        loss = multitask_loss(model(collate(take(tokenized, part), tasks, 0)), weights)
        (loss / plan.window(micro)).backward()
    assert torch.allclose(grads(model), full, atol=1e-5, rtol=1e-4)


def test_one_encoder_decodes_every_task_from_one_encoder_pass(student_dir: Path) -> None:
    tokenized = rows(student_dir, "one_encoder", n=6)
    tasks = ["answer", "reference"]
    model = load_student(str(student_dir)).eval()
    batch = collate(tokenized, tasks, 0, layout="one_encoder")
    with torch.no_grad():
        encoded = encode_questions(model, batch["question"])
        for task in tasks:
            logits, labels = task_logits(model, "one_encoder", batch[task], batch["question"], encoded)
            rows_ = batch[task]["rows"]
            plain = model(input_ids=batch["question"]["input_ids"][rows_],
                          attention_mask=batch["question"]["attention_mask"][rows_],
                          decoder_input_ids=batch[task]["decoder_input_ids"]).logits
            assert torch.allclose(logits, plain, atol=1e-5)
            assert logits.shape[:2] == labels.shape
    losses = MultiTask(model, "one_encoder", tasks)(batch)
    assert set(losses) == set(tasks) and all(torch.isfinite(v) for v in losses.values())


def test_a_batch_without_any_weighted_target_is_a_zero_loss_on_every_weight(student_dir: Path) -> None:
    tokenized = rows(student_dir, "seq2seq", n=4)
    tokenized["labels__reference"] = [np.zeros(0, np.int32)] * 4
    model = MultiTask(load_student(str(student_dir)), "seq2seq", ["reference"])
    losses = model(collate(tokenized, ["reference"], 0))
    assert list(losses) == [NO_TASK] and losses[NO_TASK].item() == 0.0
    losses[NO_TASK].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_multitask_one_encoder_losses_equal_one_decoder_pass_per_task(student_dir: Path) -> None:
    from tinyllm_ray.student.loss import token_cross_entropy

    tokenized = rows(student_dir, "one_encoder", n=6)
    tasks = ["answer", "reference"]
    model = load_student(str(student_dir)).eval()
    batch = collate(tokenized, tasks, 0, layout="one_encoder")
    with torch.no_grad():
        stacked = MultiTask(model, "one_encoder", tasks)(batch)
        encoded = encode_questions(model, batch["question"])
        for task in tasks:
            separate = token_cross_entropy(*task_logits(model, "one_encoder", batch[task], batch["question"], encoded))
            assert stacked[task].item() == pytest.approx(separate.item(), abs=1e-5)


def test_compiled_arms_share_one_graph_and_keep_the_eager_losses(student_dir: Path) -> None:
    """``train.compile`` with several arms (``compare: true``): each arm is its own model, but they compile one
    graph between them (a per-model guard would recompile for every arm and soon exhaust torch's recompile
    limit, after which it runs eager); torch's eager backend here: the capture and its guards, no codegen."""
    import torch._dynamo.utils

    tokenized = rows(student_dir, "seq2seq", n=8)
    tasks = ["answer", "reference"]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for _ in range(3):
        torch.manual_seed(0)
        arm = MultiTask(load_student(str(student_dir)), "seq2seq", tasks, "default")
        arm._compiled = torch.compile(arm._losses, backend="eager")
        torch.manual_seed(0)
        eager = MultiTask(load_student(str(student_dir)), "seq2seq", tasks)
        batch = collate(tokenized, tasks, 0, "seq2seq", 64, 8)
        got, want = arm(batch), eager(batch)
        assert {t: v.item() for t, v in got.items()} == pytest.approx({t: v.item() for t, v in want.items()}, rel=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
