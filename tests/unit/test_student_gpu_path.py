"""The student's GPU-path rules, shown on the CPU: fp32 master weights whatever the checkpoint's dtype, FSDP's
wrap policy per architecture and its own gradient clipping, valid scored in shares over the ranks, batches
collated (and length-bucketed) off the training thread, and the sweep sized to what the cluster can grow to."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.unit.test_train_steps import rows
from tinyllm_ray.student.arms import Arm
from tinyllm_ray.student.batches import bucketed, collate
from tinyllm_ray.student.feed import Collate
from tinyllm_ray.student.model import MultiTask, block_classes, load_student, prepare_kwargs
from tinyllm_ray.sweep.space import concurrent_trials

TASKS = ["answer", "reference"]
CLIP = torch.nn.utils.clip_grad_norm_


def numpy_batch(data: dict) -> dict[str, np.ndarray]:
    """Rows as Ray Data hands them to a collate function: one array per column, ragged token lists as objects."""
    out = {}
    for key, values in data.items():
        if key == "id" or not len(values) or np.ndim(values[0]) == 0:
            out[key] = np.asarray(values)
            continue
        column = np.empty(len(values), dtype=object)
        column[:] = [np.asarray(v, dtype=np.int64) for v in values]
        out[key] = column
    return out


def test_a_bf16_checkpoint_trains_with_fp32_weights(tiny_models: Path, tmp_path: Path) -> None:
    """transformers 5 loads a checkpoint in its saved dtype: a bf16 causal student (Qwen2.5's hub weights are
    bf16) would train bf16 weights and AdamW state. ``load_student`` keeps fp32 master weights."""
    saved = tmp_path / "bf16-student"
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "teacher-a", dtype=torch.bfloat16)
    model.save_pretrained(saved)
    for name in os.listdir(tiny_models / "teacher-a"):
        if "token" in name or name.endswith(".model"):
            shutil.copy(tiny_models / "teacher-a" / name, saved / name)
    assert AutoModelForCausalLM.from_pretrained(saved).dtype == torch.bfloat16  # what transformers would do
    student = load_student(str(saved))
    assert {p.dtype for p in student.parameters()} == {torch.float32}


@pytest.mark.parametrize("model_dir, block", [("student-t5", "T5Block"), ("teacher-a", "LlamaDecoderLayer")])
def test_fsdp_wraps_each_transformer_block(tiny_models: Path, model_dir: str, block: str) -> None:
    """FSDP gets a wrap policy with the architecture's blocks (one FSDP unit each), not the whole model as one
    unit; DDP gets no extra arguments."""
    model = load_student(str(tiny_models / model_dir))
    assert {c.__name__ for c in block_classes(model)} == {block}
    assert prepare_kwargs(model, "ddp") == {}
    policy = prepare_kwargs(model, "fsdp")["auto_wrap_policy"]
    wrapped = MultiTask(model, "seq2seq", ["answer"])
    units = [m for m in wrapped.modules() if policy(module=m, recurse=False, nonwrapped_numel=0)]
    blocks = [m for m in wrapped.modules() if type(m).__name__ == block]
    assert units == blocks and len(blocks) >= 2


def test_a_model_without_declared_blocks_gets_a_size_policy() -> None:
    policy = prepare_kwargs(torch.nn.Sequential(torch.nn.Linear(4, 4)), "fsdp")["auto_wrap_policy"]
    assert policy.func.__name__ == "size_based_auto_wrap_policy"


class ShardedClip(torch.nn.Module):
    """Stands in for FSDP: a module with its own ``clip_grad_norm_`` (the norm over every rank's shard)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.module = inner
        self.clipped: list[float] = []

    def forward(self, batch):
        return self.module(batch)

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        self.clipped.append(max_norm)
        return CLIP(self.parameters(), max_norm)


def test_fsdp_clips_with_its_own_norm(tiny_models: Path, monkeypatch) -> None:
    """Under FSDP each rank holds a shard of the gradients: ``torch.nn.utils.clip_grad_norm_`` would clip each
    rank by its own shard's norm. The arm uses the wrapper's ``clip_grad_norm_`` when it has one."""
    student_dir = tiny_models / "student-t5"
    model = ShardedClip(MultiTask(load_student(str(student_dir)), "seq2seq", ["answer"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    arm = Arm("student", {"answer": 1.0}, model, optimizer,
              torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0))
    plain: list[float] = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, max_norm, **kw: plain.append(max_norm) or torch.zeros(()))
    data = rows(student_dir, "seq2seq", n=8)
    arm.backward(collate({k: v[:4] for k, v in data.items()}, ["answer"], 0), 1, True, torch.device("cpu"), False)
    arm.optimizer_step(0.5)
    assert model.clipped == [0.5] and plain == []


def test_collate_off_the_training_thread_gives_the_same_batches(tiny_models: Path) -> None:
    """``Collate`` (Ray Data's collate function) returns what ``collate`` does; with length bucketing, a window
    becomes the same buckets, in the same seeded order, as ``bucketed`` then ``collate`` gave on the loop's thread."""
    data = numpy_batch(rows(tiny_models / "student-t5", "seq2seq", n=16))
    plain = Collate(TASKS, 0, "seq2seq")(data)
    assert len(plain) == 1 and torch.equal(plain[0]["answer"]["input_ids"], collate(data, TASKS, 0)["answer"]["input_ids"])
    got = Collate(TASKS, 0, "seq2seq", bucket_size=4, rng=np.random.default_rng([0, 1]))(data)
    want = [collate(b, TASKS, 0) for b in bucketed(data, 4, np.random.default_rng([0, 1]), TASKS)]
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        assert g["rows"] == w["rows"]
        assert torch.equal(g["reference"]["labels"], w["reference"]["labels"])
    widths = sorted(b["answer"]["input_ids"].shape[1] for b in got)
    assert widths[0] < widths[-1]  # buckets of similar length: not all padded to the longest


def test_the_sweep_counts_the_nodes_an_autoscaler_can_add(tmp_path: Path, monkeypatch) -> None:
    """A ``ray up`` cluster whose GPU workers are scaled down: the live head has no GPU, the autoscaler may add
    four nodes of 8 GPUs. One GPU trial at a time would leave 31 GPUs idle; the sweep plans for 32, reading the
    cluster as ``sweep.run`` does (``resources.capacity_now``: Ray's live nodes and the autoscaler's config)."""
    import json

    import ray

    from tests.unit.test_sweep_space import make
    from tinyllm_ray import resources

    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text(json.dumps({"available_node_types": {
        "head": {"max_workers": 0, "resources": {"CPU": 8}},
        "gpu": {"min_workers": 0, "max_workers": 4, "resources": {"CPU": 96, "GPU": 8}}}}))
    monkeypatch.setattr(resources, "AUTOSCALER_CONFIG", bootstrap)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 8.0,
                                                                              "node:__internal_head__": 1.0}}])
    gpu_sweep = make({"gamma": [1.0]}, use_gpu=True)
    assert concurrent_trials(gpu_sweep, resources.capacity_now()) == 32
    assert concurrent_trials(gpu_sweep, {"CPU": 8.0, "GPU": 0.0}) == 1  # what the live nodes alone would give


def test_a_compiled_student_gets_fixed_shape_batches_from_its_shard(tiny_models: Path, ray_local) -> None:
    """``train.compile`` reaches the Train worker's batches: ``epoch_batches`` pads every task to ``batch_size``
    rows and its lengths to a multiple of 64 (a short last batch included, its real row count kept); off, each
    batch is padded to its own longest row and carries only its own rows."""
    import ray.data

    from tinyllm_ray.config import from_dict
    from tinyllm_ray.student.feed import epoch_batches

    student = tiny_models / "student-t5"
    data = rows(student, "seq2seq", n=10)
    dataset = ray.data.from_items([{k: (v[i] if k == "id" else [int(t) for t in v[i]]) for k, v in data.items()}
                                   for i in range(10)])
    for compile_mode in ("default", "off"):
        config = from_dict({"student": {"model": str(student)},
                            "train": {"batch_size": 4, "compile": compile_mode, "shuffle": "none"}})
        batches = list(epoch_batches(dataset, config, 0, TASKS, 0, "seq2seq"))
        assert [b["rows"] for b in batches] == [4, 4, 2]
        for batch in batches:
            for task in TASKS:
                n, width = batch[task]["labels"].shape
                if compile_mode == "default":
                    assert n == 4 and width % 64 == 0 and batch[task]["input_ids"].shape == (4, 64)
                else:
                    assert n <= batch["rows"] and width < 64
