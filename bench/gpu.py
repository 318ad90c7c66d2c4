"""The GPU check and benchmark: the student's training step, FSDP, scoring, resuming and the HF teacher engine on
one CUDA GPU, through the project's own code, with random-weight models built here (no download, no Ray, no vLLM:
a machine with torch, transformers and pydantic runs it). The last line is one JSON object.

    python bench/gpu.py [--json PATH]          # on a CUDA machine: the checks and the figures (a few minutes)
    python bench/gpu.py --device cpu --quick   # the same code on tiny shapes on the CPU (the default tests run it)
    bash bench/gpu_check.sh                    # on a GPU machine: tests/gpu, then this script

Checks (each printed with ``ok`` or ``FAILED``; the exit status is 1 when one fails):

- ``step_counts`` (CPU and GPU alike; ``--device cpu --checks step_counts``): one training step of the FLAN-T5-base
  shape (512-token vocabulary, prefix mode, three tasks with targets of 8, 128 and 128 tokens, batch 2, 64 input
  tokens, bf16 autocast) counted op by op (``OpCounter``): aten ops, fp32 matrix products, encoder calls, and the
  relative gap of its losses to one forward per task on the stock model; the same counts for that per-task step
  (``reference_*``) in the same run. Issue #37's targets: <= 9,000 ops, no fp32 matrix product, one encoder call,
  gap <= 1e-3.

- ``student_step`` (FLAN-T5-base and -large shapes, T5 v1.1: gated-GELU, untied head, vocabulary 32128): a training
  step with bf16 autocast through ``arms.Arm`` and ``model.MultiTask`` (three tasks: answer and two rationales):
  the loss is finite, weights and AdamW state stay fp32, and the project's code reads nothing back from the device
  within a step (``project_syncs``). Figures: ms/step, samples/s, peak memory, every device sync torch sees in a
  step (CUDA's sync debug mode: the project's and the libraries'), and model FLOPs utilisation: the step's
  FLOPs by the project's one formula (``estimate.step_flops``: matrix products, attention scores, cross-attention
  keys and values; forward + backward = 3 x forward) / step time / the GPU's dense bf16 peak (989 TFLOP/s for
  H100/H200 SXM; ``--peak-tflops`` for others).
- ``fsdp``: the same step under FSDP in one process with the project's wrap policy (``model.prepare_kwargs``: one
  FSDP unit per T5 block) and FSDP's own gradient clipping; CUDA only.
- ``scoring``: rank classification and generate-and-match on the device pick what they pick on the CPU.
- ``resume``: AdamW state saved from the device loads on the CPU (``arms.load_state``), then back onto the device,
  and training goes on.
- ``hf_engine`` (~1B Llama shape: TinyLlama-1.1B's layers, this script's 2,000-token vocabulary): greedy text in
  fp32 is the same with and without the static key/value cache, and generation compiles no graph (the engine turns
  transformers' auto-compile off). Figures: new tokens/s in bf16 with the static cache and without.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from tinyllm_ray.estimate import Shape
from tinyllm_ray.estimate import step_flops as estimate_step_flops
from tinyllm_ray.student.arms import STATE_FILE, Arm, adamw, load_state
from tinyllm_ray.student.model import MultiTask, block_classes, prepare_kwargs, reference_losses, to_device

T5_SHAPES = {
    "flan-t5-base": {"d_model": 768, "d_ff": 2048, "d_kv": 64, "num_heads": 12, "num_layers": 12},
    "flan-t5-large": {"d_model": 1024, "d_ff": 2816, "d_kv": 64, "num_heads": 16, "num_layers": 24},
    "tiny-t5": {"d_model": 64, "d_ff": 128, "d_kv": 32, "num_heads": 2, "num_layers": 2},
}
LLAMA_SHAPES = {
    "llama-1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
                 "num_key_value_heads": 4},
    "tiny-llama": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "num_key_value_heads": 2},
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
TASKS = ("answer", "teacher-a", "teacher-b")
TARGET_TOKENS = {"answer": 8, "teacher-a": 128, "teacher-b": 128}


def t5_model(shape: str, vocab: int = 32128, attention: str = "sdpa") -> torch.nn.Module:
    """A randomly initialised T5 of ``shape``; ``attention``: transformers' attention implementation (set in the
    config: T5 copies it into its encoder's and decoder's own configs when it is built)."""
    from transformers import T5Config, T5ForConditionalGeneration

    s = T5_SHAPES[shape]
    return T5ForConditionalGeneration(T5Config(
        vocab_size=vocab, d_model=s["d_model"], d_ff=s["d_ff"], d_kv=s["d_kv"], num_heads=s["num_heads"],
        num_layers=s["num_layers"], num_decoder_layers=s["num_layers"], feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        attn_implementation=attention))


def task_batch(batch: int, input_tokens: int, vocab: int, device: torch.device, seed: int = 0) -> dict[str, Any]:
    """A collated seq2seq batch (``batches.collate``'s layout) of random tokens for every task, full length."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"rows": batch}
    for task in TASKS:
        ids = torch.randint(4, vocab, (batch, input_tokens), generator=g)
        labels = torch.randint(4, vocab, (batch, TARGET_TOKENS[task]), generator=g)
        out[task] = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
                     "labels": labels.to(device)}
    return out


def step_flops(model: torch.nn.Module, batch: int, input_tokens: int, one_encoder: bool = False) -> float:
    """Model FLOPs of one training step by the project's one formula (``estimate.step_flops``: matrix products,
    attention scores and cross-attention keys/values, forward + backward = 3 x forward); the encoder runs once
    per task (``train.mode: prefix``) or once per step (``one_encoder``)."""
    shape = Shape.of(model.config.to_dict())
    return estimate_step_flops(shape, batch, input_tokens, list(TARGET_TOKENS.values()), one_encoder=one_encoder)


class ProjectReads:
    """Counts reads of tensor values into Python made by the project's own code (each is a device sync on a GPU)."""

    READS = ("item", "__float__", "__bool__", "__int__", "tolist", "cpu", "numpy")

    def __init__(self) -> None:
        import tinyllm_ray

        self.package, self.count, self.saved = str(Path(tinyllm_ray.__file__).parent), 0, {}

    def __enter__(self) -> ProjectReads:  # noqa: PYI034
        for name in self.READS:
            original = self.saved[name] = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                if sys._getframe(1).f_code.co_filename.startswith(self.package):
                    self.count += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self.saved.items():
            setattr(torch.Tensor, name, original)


def all_syncs(device: torch.device, fn: Any) -> int | None:
    """Device syncs torch reports while ``fn`` runs (CUDA's sync debug mode); None on the CPU."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in seen)


def make_arm(module: torch.nn.Module, fused: bool = True) -> Arm:
    """An arm as training makes one (``arms.adamw``); ``fused=False``: torch's default AdamW instead."""
    optimizer = adamw(module, 1e-4) if fused else torch.optim.AdamW(module.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return Arm("student", dict.fromkeys(TASKS, 1.0), module, optimizer, scheduler)


def train_step(arm: Arm, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    arm.backward(batch, 1, True, device, device.type == "cuda")
    return arm.optimizer_step(1.0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def student_step(shape: str, device: torch.device, batch: int, input_tokens: int, steps: int,
                 peak_tflops: float | None) -> dict[str, Any]:
    torch.manual_seed(0)
    model = t5_model(shape, 32128 if device.type == "cuda" else 512).to(device)
    arm = make_arm(MultiTask(model, "seq2seq", list(TASKS)).to(device))
    data = task_batch(batch, input_tokens, model.config.vocab_size, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses = [train_step(arm, data, device)]  # warm-up (kernels, allocator)
    with ProjectReads() as reads:
        syncs = all_syncs(device, lambda: losses.append(train_step(arm, data, device)))
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        losses.append(train_step(arm, data, device))
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    values = torch.stack(losses).tolist()
    state_dtypes = {v.dtype for s in arm.optimizer.state.values() for v in s.values() if v.dim() > 0}
    flops = step_flops(model, batch, input_tokens)
    return {
        "ok": all(math.isfinite(v) for v in values)
        and {p.dtype for p in model.parameters()} == {torch.float32} and state_dtypes == {torch.float32}
        and reads.count == 0,
        "loss_first_last": [round(values[0], 4), round(values[-1], 4)], "project_syncs": reads.count,
        "all_syncs": syncs, "ms_per_step": round(1000 * seconds, 1), "samples_per_s": round(batch / seconds, 1),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "batch": batch,
        "mfu": round(flops / seconds / (peak_tflops * 1e12), 3) if peak_tflops else None,
    }


# The sweep's variants: (name, layout, batch, compile). ``prefix`` is ``train.mode: prefix`` (every task's input
# through one encoder call), ``one_encoder`` is ``train.mode: one_encoder``; ``compile``: None (eager) or
# ``train.compile``'s mode (``MultiTask(..., compile=...)``, as training compiles it). ``peer``: a plain single-task
# step of the stock transformers T5 on the same tokens (3 x batch rows of the same input, targets of the mean task
# length; transformers' own loss), the step a user would write by hand; ``before``: the student's step before issue
# #37 (one forward per task on the stock model, torch's default AdamW). ``vs_peer``: the peer's ms/step over the
# variant's at the same batch and compile.
SWEEP = (("prefix b32", "seq2seq", 32, None), ("prefix b64", "seq2seq", 64, None), ("peer b64", "peer", 64, None),
         ("one_encoder b64", "one_encoder", 64, None), ("before b32", "before", 32, None),
         ("prefix b128", "seq2seq", 128, None), ("prefix b64 reduce-overhead", "seq2seq", 64, "reduce-overhead"),
         ("peer b64 reduce-overhead", "peer", 64, "reduce-overhead"),
         ("one_encoder b64 reduce-overhead", "one_encoder", 64, "reduce-overhead"),
         ("prefix b128 reduce-overhead", "seq2seq", 128, "reduce-overhead"),
         ("prefix b32 reduce-overhead", "seq2seq", 32, "reduce-overhead"), ("one_encoder b32", "one_encoder", 32, None),
         ("one_encoder b128", "one_encoder", 128, None), ("peer b32", "peer", 32, None),
         ("peer b128", "peer", 128, None))
QUICK_SWEEP = (("prefix b2", "seq2seq", 2, None), ("one_encoder b2", "one_encoder", 2, None),
               ("peer b2", "peer", 2, None), ("before b2", "before", 2, None))


class Peer(torch.nn.Module):
    """A plain single-task T5 step: transformers' forward with ``labels`` and its loss (``sweep``'s ``peer``)."""

    def __init__(self, model: torch.nn.Module, compile_as: str | None = None) -> None:
        super().__init__()
        self.model = model
        self._step = self._loss if compile_as is None else torch.compile(self._loss, mode=compile_as)
        self.compile_as = compile_as

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"], use_cache=False).loss

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.compile_as == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        return {TASKS[0]: self._step(batch)}


def peer_batch(batch: int, input_tokens: int, vocab: int, device: torch.device) -> dict[str, torch.Tensor]:
    """``Peer``'s batch with the tokens of ``task_batch(batch, ...)``: every task's rows, targets of the mean length."""
    g = torch.Generator().manual_seed(0)
    rows, target = batch * len(TASKS), round(sum(TARGET_TOKENS.values()) / len(TASKS))
    ids = torch.randint(4, vocab, (rows, input_tokens), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
            "labels": torch.randint(4, vocab, (rows, target), generator=g).to(device)}


def one_encoder_batch(batch: int, input_tokens: int, vocab: int, device: torch.device) -> dict[str, Any]:
    """``task_batch`` in the one-encoder layout: the question encoded once, each task decoded from it."""
    from tinyllm_ray.student.batches import QUESTION

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (batch, input_tokens), generator=g)
    out: dict[str, Any] = {"rows": batch, QUESTION: {"input_ids": ids.to(device),
                                                     "attention_mask": torch.ones_like(ids).to(device)}}
    for task in TASKS:
        labels = torch.randint(4, vocab, (batch, TARGET_TOKENS[task]), generator=g)
        out[task] = {"rows": torch.arange(batch, device=device), "labels": labels.to(device),
                     "decoder_input_ids": torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1).to(device)}
    return out


def free(device: torch.device) -> None:
    """Release what an earlier check held (optimizer/scheduler cycles need the collector) before the next one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sweep_row(shape: str, device: torch.device, layout: str, batch: int, compile_as: str | None, input_tokens: int,
              steps: int, peak_tflops: float | None) -> dict[str, Any]:
    torch.manual_seed(0)
    model = t5_model(shape, 32128 if device.type == "cuda" else 512).to(device)
    vocab = model.config.vocab_size
    if layout == "peer":
        module, data = Peer(model, compile_as), peer_batch(batch, input_tokens, vocab, device)
        flops = estimate_step_flops(Shape.of(model.config.to_dict()), batch * len(TASKS), input_tokens,
                                    [data["labels"].size(1)])
    elif layout == "before":
        module, data = PerTask(model), task_batch(batch, input_tokens, vocab, device)
        flops = step_flops(model, batch, input_tokens)
    else:
        module = MultiTask(model, layout, list(TASKS), compile_as or "off")
        data = (one_encoder_batch if layout == "one_encoder" else task_batch)(batch, input_tokens, vocab, device)
        flops = step_flops(model, batch, input_tokens, one_encoder=layout == "one_encoder")
    arm = make_arm(module, fused=layout != "before")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(3 if compile_as else 1):  # warm-up (kernels, allocator, the compiled graphs)
        train_step(arm, data, device)
    sync(device)
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    losses = [train_step(arm, data, device) for _ in range(steps)]
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    return {"ok": all(math.isfinite(v) for v in torch.stack(losses).tolist()), "ms_per_step": round(1000 * seconds, 1),
            "samples_per_s": round(batch / seconds, 1), "warmup_s": round(warm_s, 1),
            "tflops_per_step": round(flops / 1e12, 3),
            "mfu": round(flops / seconds / (peak_tflops * 1e12), 3) if peak_tflops else None,
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None}


def mfu_sweep(shape: str, device: torch.device, variants: tuple, input_tokens: int, steps: int,
              peak_tflops: float | None, budget_s: float = math.inf) -> dict[str, Any]:
    """The student's step time and MFU per variant (layout, batch, fused AdamW, compile): which settings reach the
    MFU target on this GPU. A variant that runs out of memory is reported as such; the others run. Variants after
    the first that would start ``budget_s`` seconds after the sweep began are reported as skipped (a lent
    machine's minutes are counted; a compiled variant takes minutes)."""
    rows = {}
    until = time.monotonic() + budget_s
    for name, layout, batch, compile_as in variants:
        free(device)
        if rows and time.monotonic() > until:
            rows[name] = {"ok": True, "skipped": "out of time"}
            continue
        try:
            rows[name] = sweep_row(shape, device, layout, batch, compile_as, input_tokens, steps, peak_tflops)
        except torch.OutOfMemoryError:
            rows[name] = {"ok": True, "out_of_memory": True}
        except Exception as err:  # noqa: BLE001 (one variant failing, e.g. compile, does not hide the others)
            rows[name] = {"ok": False, "error": f"{type(err).__name__}: {err}"[:300]}
        print(f"  {name}: {json.dumps(rows[name])}", flush=True)
        if compile_as:
            torch._dynamo.reset()  # the next variant compiles its own model, not a recompile of this one
    free(device)
    for name, row in rows.items():  # the peer's time over this variant's, at the same batch and compile
        peer = rows.get(name.replace("prefix", "peer", 1).replace("one_encoder", "peer", 1), {})
        if "ms_per_step" in row and "ms_per_step" in peer and not name.startswith(("peer", "before")):
            row["vs_peer"] = round(peer["ms_per_step"] / row["ms_per_step"], 3)
    return {"ok": all(r["ok"] for r in rows.values()), "shape": shape, "input_tokens": input_tokens, "rows": rows}


def profile_step(shape: str, device: torch.device, batch: int, input_tokens: int,
                 peak_tflops: float | None) -> dict[str, Any]:
    """Where an eager step's time goes (torch.profiler over 2 steps after a warm-up): kernels launched per step,
    the host's time per launch, the device's busy time per step (the sum of the kernels' times: one stream) and
    the MFU the step would reach if the host kept the device busy; the host-side ops that cost most."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = t5_model(shape, 32128 if device.type == "cuda" else 512).to(device)
    arm = make_arm(MultiTask(model, "seq2seq", list(TASKS)).to(device))
    data = task_batch(batch, input_tokens, model.config.vocab_size, device)
    train_step(arm, data, device)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    steps = 2
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            train_step(arm, data, device)
        sync(device)
    wall = (time.perf_counter() - start) / steps
    events = prof.key_averages()
    launches = [e for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                               "cuLaunchKernelEx")]
    n_launch = sum(e.count for e in launches) / steps
    launch_us = sum(e.self_cpu_time_total for e in launches) / max(1, sum(e.count for e in launches))
    kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    busy = sum(e.self_device_time_total for e in kernels) / steps / 1e6  # seconds
    flops = step_flops(model, batch, input_tokens)
    top = sorted((e for e in events if e.device_type == torch.autograd.DeviceType.CPU),
                 key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    ops = sum(e.count for e in events if e.key.startswith("aten::")) / steps
    slowest = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:12]
    # fp32 matrix products on CUDA cores or TF32: cuBLAS/CUTLASS kernel names carry their input type
    fp32_gemm = [e for e in kernels if "gemm" in e.key.lower() and not any(t in e.key.lower() for t in
                                                                          ("bf16", "f16", "half", "bfloat"))]
    return {"ok": True, "ms_per_step": round(1000 * wall, 1), "aten_ops_per_step": round(ops),
            "launches_per_step": round(n_launch),
            "host_us_per_launch": round(launch_us, 1), "device_busy_ms_per_step": round(1000 * busy, 1),
            "mfu": round(flops / wall / (peak_tflops * 1e12), 3) if peak_tflops else None,
            "mfu_device_bound": round(flops / busy / (peak_tflops * 1e12), 3) if peak_tflops and busy else None,
            "fp32_gemm_ms_per_step": round(sum(e.self_device_time_total for e in fp32_gemm) / steps / 1000, 2),
            "host_top_ms_per_step": {e.key[:60]: round(e.self_cpu_time_total / steps / 1000, 1) for e in top},
            "device_top_ms_per_step": {e.key[:90]: [round(e.self_device_time_total / steps / 1000, 1),
                                                    round(e.count / steps)] for e in slowest}}


MATMULS = {"mm", "bmm", "addmm", "baddbmm", "matmul", "linear"}


class OpCounter:
    """Every aten op that reaches the dispatcher while open (a ``TorchDispatchMode``: views and copies included,
    below autograd and autocast, so the casts autocast inserts count), the reads of a value into Python among
    them (``host_reads``: each a device sync on a GPU, whoever's code made it), and the matrix products that
    get an fp32 operand of rank >= 2 (for SDPA, its query/key/value/output-gradient operands: its backward also
    takes the fp32 log-sum-exp statistics it saved, which is not a matrix product in fp32)."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counter.seen(func.overloadpacket.__name__, args)
                return func(*args, **(kwargs or {}))

        self.mode, self.ops, self.fp32_matmuls, self.host_reads = Mode(), 0, 0, 0

    def seen(self, name: str, args: tuple) -> None:
        self.ops += 1
        self.host_reads += name == "_local_scalar_dense"  # .item(), bool(tensor): a device sync on a GPU
        if name in MATMULS:
            operands = [a for a in args if isinstance(a, torch.Tensor)]
        elif "scaled_dot_product" in name:
            operands = [a for a in args if isinstance(a, torch.Tensor) and a.dim() == 4][:4]
        else:
            return
        self.fp32_matmuls += any(a.dtype == torch.float32 and a.dim() >= 2 for a in operands)

    def __enter__(self) -> OpCounter:  # noqa: PYI034
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)


class PerTask(torch.nn.Module):
    """The step before one pass (``model.reference_losses``: one forward per task) on the stock HF model, with
    torch's default AdamW: the same-run baseline of ``step_counts``."""

    def __init__(self, model: torch.nn.Module, layout: str = "seq2seq") -> None:
        super().__init__()
        self.model, self.layout = model, layout

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return reference_losses(self.model, self.layout, batch, list(TASKS))


def counted_step(arm: Arm, data: dict[str, Any], device: torch.device) -> dict[str, int]:
    """One training step (forward, backward, optimizer) in bf16 autocast, on any device, counted."""
    inner = arm.model.model  # MultiTask, PerTask or another wrapper holding the HF model as ``model``
    encoder = inner.get_encoder() if inner.config.is_encoder_decoder else None
    calls = []
    hook = encoder.register_forward_pre_hook(lambda *_: calls.append(1)) if encoder is not None else None
    try:
        with OpCounter() as counter:
            arm.backward(data, 1, True, device, True)
            arm.optimizer_step(1.0)
    finally:
        if hook is not None:
            hook.remove()
    return {"aten_ops_per_step": counter.ops, "fp32_matmuls_under_bf16": counter.fp32_matmuls,
            "encoder_calls_per_step": len(calls), "host_reads_per_step": counter.host_reads}


# Issue #37's targets for ``step_counts`` (the FLAN-T5-base shape, prefix mode, three tasks).
STEP_TARGETS = {"aten_ops_per_step": 9000, "fp32_matmuls_under_bf16": 0, "encoder_calls_per_step": 1,
                "host_reads_per_step": 0, "loss_gap": 1e-3}


def against_reference(model: torch.nn.Module, layout: str, data: dict[str, Any],
                      reference: bool = True) -> dict[str, Any]:
    """``counted_step`` of ``model``'s training step and ``loss_gap``: the largest relative difference between its
    per-task losses and ``PerTask``'s on a stock copy of the model, same batch and weights, both in bf16;
    ``reference``: also the counts of ``PerTask``'s step (``reference_*``) and ``ops_ratio``."""
    import copy

    device = torch.device("cpu")
    stock = copy.deepcopy(model)
    arm = make_arm(MultiTask(model, layout, list(TASKS)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        new, ref = arm.model(data), PerTask(stock, layout)(data)
    gap = max(abs(float(new[t]) - float(ref[t])) / abs(float(ref[t])) for t in TASKS)
    train_step(arm, data, device)  # the optimizer's state is made in the first step: count the second
    out: dict[str, Any] = {**counted_step(arm, data, device), "loss_gap": float(f"{gap:.2e}")}
    if reference:
        base = make_arm(PerTask(stock, layout), fused=False)
        train_step(base, data, device)
        out.update({f"reference_{k}": v for k, v in counted_step(base, data, device).items()})
        out["ops_ratio"] = round(out["aten_ops_per_step"] / out["reference_aten_ops_per_step"], 3)
    return out


def step_counts(shape: str = "flan-t5-base", vocab: int = 512, batch: int = 2, input_tokens: int = 64,
                reference: bool = True) -> dict[str, Any]:
    """What one training step of the student asks of the device, counted on the CPU (the counts do not depend on
    the batch size, so they stand for a GPU's kernel launches): aten ops, fp32 matrix products under bf16
    autocast, encoder calls, host reads and the loss gap to the step before (``against_reference``)."""
    torch.manual_seed(0)
    model = t5_model(shape, vocab)
    out: dict[str, Any] = {"shape": shape, "vocab": vocab, "batch": batch, "input_tokens": input_tokens,
                           "target_tokens": TARGET_TOKENS,
                           **against_reference(model, "seq2seq", task_batch(batch, input_tokens, vocab,
                                                                            torch.device("cpu")), reference)}
    met = {k: out[k] <= limit for k, limit in STEP_TARGETS.items()}
    return {"ok": all(met.values()), "targets": STEP_TARGETS, "met": met, **out}


QWEN_SHAPE = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2}  # Qwen2.5-0.5B's layers, the modern presets' student


def causal_batch(batch: int, input_tokens: int, vocab: int, seed: int = 0) -> dict[str, Any]:
    """``task_batch`` in the causal layout: each task's row is the prompt then its target, the prompt unscored."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"rows": batch}
    for task in TASKS:
        ids = torch.randint(4, vocab, (batch, input_tokens + TARGET_TOKENS[task]), generator=g)
        labels = ids.clone()
        labels[:, :input_tokens] = -100
        out[task] = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    return out


def causal_step_counts(vocab: int = 512, batch: int = 2, input_tokens: int = 64) -> dict[str, Any]:
    """``step_counts`` for a causal student of Qwen2.5-0.5B's layers (the modern presets'), counted the same way."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, pad_token_id=0, eos_token_id=1, **QWEN_SHAPE))
    out: dict[str, Any] = {"shape": "qwen2.5-0.5b layers", "vocab": vocab, "batch": batch,
                           **against_reference(model, "causal", causal_batch(batch, input_tokens, vocab))}
    return {"ok": out["fp32_matmuls_under_bf16"] == 0 and out["host_reads_per_step"] == 0
            and out["loss_gap"] <= 1e-2, **out}


def ragged_rows(n: int, batch: int, vocab: int, seed: int = 0) -> dict[str, list]:
    """``batches.Tokenize``-style rows (seq2seq layout) of random tokens with ragged lengths in two of
    ``COMPILE_PAD_MULTIPLE``'s buckets: the rows of even batches (of ``batch`` rows) long (inputs of 70-120
    tokens, targets of 70-100), of odd batches short (10-60, 3-60); every 4th row has no rationale from
    ``teacher-b`` (a teacher that wrote none)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"id": [f"q{i}" for i in range(n)]}
    long = [(i // batch) % 2 == 0 for i in range(n)]
    for task in TASKS:
        out[f"ids__{task}"] = [rng.integers(4, vocab, rng.integers(70, 121) if x else rng.integers(10, 61))
                               for x in long]
        out[f"labels__{task}"] = [rng.integers(4, vocab, rng.integers(70, 101) if x else rng.integers(3, 61))
                                  for x in long]
    out["labels__teacher-b"] = [np.zeros(0, np.int64) if i % 4 == 3 else v
                                for i, v in enumerate(out["labels__teacher-b"])]
    return out


class Recompiles(logging.Handler):
    """Why torch compiled again (its ``recompiles`` log records) while it is open: printed in the check's figures,
    so a GPU run says what a CPU run could not show."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        torch._logging.set_logs(recompiles=True)
        self.logger = logging.getLogger("torch._dynamo")
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if "triggered by" in (message := record.getMessage()):
            self.seen.append(" ".join(message.split())[:400])

    def close(self) -> None:
        self.logger.removeHandler(self)
        torch._logging.set_logs()
        super().close()


def compiled_student(shape: str, device: torch.device, mode: str, batch: int, steps: int,
                     backend: str | None = None) -> dict[str, Any]:
    """``train.compile`` as training runs it: ``MultiTask(..., compile=mode)`` on batches ``feed.Collate`` pads to
    fixed shapes (``feed.padding``), against the same student eager on plainly padded batches, each with its own
    AdamW from the same weights. Ragged lengths over two length buckets, a short last batch, a task with missing
    rows: the losses agree step by step (bf16 on a GPU: within 2%), and torch compiles at most two graphs
    (the first shape, then one shape-generic graph) however many shapes the batches have. ``backend``: torch's
    backend instead of inductor (``eager`` on the CPU path: the same capture and guards, no codegen)."""
    from types import SimpleNamespace

    import torch._dynamo.utils

    from tinyllm_ray.student.batches import collate, padding

    multiple, rows = padding(SimpleNamespace(compile=mode, pad_multiple=0, batch_size=batch))
    vocab = 32128 if device.type == "cuda" else 512
    data = ragged_rows(batch * (steps - 1) + batch // 2 + 1, batch, vocab)
    parts = [{k: v[i:i + batch] for k, v in data.items()} for i in range(0, len(data["id"]), batch)]
    runs = {}
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    reasons = Recompiles()
    for compiled_run in (False, True):
        torch.manual_seed(0)
        module = MultiTask(t5_model(shape, vocab), "seq2seq", list(TASKS)).to(device)
        if compiled_run:
            module = MultiTask(module.model, "seq2seq", list(TASKS), mode)
            if backend:  # the same function, compiled by another backend
                module._compiled = torch.compile(module._losses, backend=backend)
        arm = make_arm(module)
        graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        losses, seconds = [], []
        for part in parts:
            collated = collate(part, TASKS, 0, "seq2seq", multiple, rows) if compiled_run else collate(part, TASKS, 0)
            start = time.perf_counter()
            losses.append(train_step(arm, to_device(collated, device), device))
            sync(device)
            seconds.append(time.perf_counter() - start)
        runs[compiled_run] = {"losses": torch.stack(losses).tolist(),  # the median step: compiling ones left out
                              "ms_per_step": round(1000 * float(np.median(seconds)), 1),
                              "compile_s": round(sum(seconds) - len(seconds) * float(np.median(seconds)), 1),
                              "graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before}
    reasons.close()
    eager, comp = runs[False], runs[True]
    tolerance = 2e-2 if device.type == "cuda" else 1e-4
    worst = max(abs(a - b) / abs(a) for a, b in zip(eager["losses"], comp["losses"]))
    shapes = {tuple(collate(p, TASKS, 0)["teacher-a"]["input_ids"].shape) for p in parts}
    return {"ok": worst <= tolerance and 0 < comp["graphs"] <= 2 and eager["graphs"] == 0, "mode": mode,
            "backend": backend or "inductor", "steps": len(parts), "plain_shapes": len(shapes),
            "graphs": comp["graphs"], "worst_relative_loss_gap": round(worst, 5),
            "ms_per_step_eager": eager["ms_per_step"], "ms_per_step_compiled": comp["ms_per_step"],
            "compile_s": comp["compile_s"], "eager_graphs": eager["graphs"], "recompile_reasons": reasons.seen[:4],
            "graph_breaks": {k[:200]: v for k, v in list(torch._dynamo.utils.counters["graph_break"].items())[:4]}}


def fsdp_step(shape: str, device: torch.device, batch: int, input_tokens: int) -> dict[str, Any]:
    if device.type != "cuda":
        return {"ok": True, "skipped": "FSDP needs CUDA"}
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = t5_model(shape)
        blocks = sum(1 for m in model.modules() if type(m) in block_classes(model))
        wrapped = FSDP(MultiTask(model, "seq2seq", list(TASKS), fixed_passes=True),
                       device_id=torch.cuda.current_device(),
                       **prepare_kwargs(model, "fsdp"))
        units = sum(1 for m in wrapped.modules() if isinstance(m, FSDP)) - 1  # the root wraps the rest
        arm = make_arm(wrapped)
        data = task_batch(batch, input_tokens, model.config.vocab_size, device)
        losses = torch.stack([train_step(arm, data, device) for _ in range(3)]).tolist()
        return {"ok": units == blocks and all(math.isfinite(v) for v in losses), "fsdp_units": units, "blocks": blocks,
                "losses": [round(v, 4) for v in losses]}
    finally:
        dist.destroy_process_group()


def scoring(device: torch.device, n: int) -> dict[str, Any]:
    from tinyllm_ray.data.synthetic import generate
    from tinyllm_ray.student.batches import Encoder
    from tinyllm_ray.student.scoring import Scorer
    from tinyllm_ray.tiny import _student
    from tinyllm_ray.tiny_parts import train_tokenizer, wrap_tokenizer

    tokenizer = wrap_tokenizer(train_tokenizer(), seq2seq=True)
    torch.manual_seed(0)
    model = _student(len(tokenizer)).eval()
    questions = generate(n, 1, 1, seed=5)["train"]
    encoder = Encoder(tokenizer, "seq2seq", 128, 32, 0)
    picks = {}
    for where in (torch.device("cpu"), device):
        scorer = Scorer(model.to(where), encoder, 16, 8, where, False)
        picks[where.type] = (scorer.rank(questions), scorer.generate(questions))
    cpu, dev = picks["cpu"], picks[device.type]
    rank_same = sum(a == b for a, b in zip(cpu[0], dev[0]))
    text_same = sum(a == b for a, b in zip(cpu[1], dev[1]))
    return {"ok": rank_same == text_same == len(questions), "questions": len(questions), "rank_same": rank_same,
            "generate_same": text_same}


def resume(device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    model = t5_model("tiny-t5", 512).to(device)
    module = MultiTask(model, "seq2seq", list(TASKS)).to(device)
    arm = make_arm(module)
    data = task_batch(4, 32, 512, device)
    train_step(arm, data, device)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"optimizer": arm.optimizer.state_dict(), "step": 1}, Path(tmp) / STATE_FILE)
        state = load_state(Path(tmp))
    on_cpu = all(v.device.type == "cpu" for s in state["optimizer"]["state"].values() for v in s.values()
                 if isinstance(v, torch.Tensor))
    again = make_arm(module)
    again.optimizer.load_state_dict(state["optimizer"])
    moved = all(v.device == p.device for p, s in again.optimizer.state.items() for k, v in s.items() if k != "step")
    loss = float(train_step(again, data, device))
    return {"ok": on_cpu and moved and math.isfinite(loss), "loaded_on_cpu": on_cpu, "state_on_param_device": moved}


def hf_engine(shape: str, device: torch.device, prompts: int, new_tokens: int) -> dict[str, Any]:
    import torch._dynamo.utils
    from transformers import LlamaConfig, LlamaForCausalLM

    from tinyllm_ray.data.synthetic import generate
    from tinyllm_ray.teachers.engines import HFEngine, Settings
    from tinyllm_ray.tiny_parts import save_model, train_tokenizer, wrap_tokenizer

    tokenizer = wrap_tokenizer(train_tokenizer(), seq2seq=False)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048, pad_token_id=0, bos_token_id=3,
                         eos_token_id=1, **LLAMA_SHAPES[shape])
    texts = [f"{q.question} {q.reference_rationale}" for q in generate(prompts, 1, 1, seed=7)["train"]]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        save_model(Path(tmp), LlamaForCausalLM(config).to(torch.bfloat16), tokenizer)
        gpus = 1.0 if device.type == "cuda" else 0.0
        settings = Settings(max_new_tokens=new_tokens, num_gpus=gpus, dtype="float32", chat_template="off")
        greedy = {}
        for static in (True, False):
            engine = HFEngine(tmp, settings, batch_size=16, static_cache=static)
            greedy[static] = [g.text for g in engine.generate(texts)]
            del engine
        frames_before = sum(torch._dynamo.utils.counters["frames"].values())
        for static in (True, False):
            engine = HFEngine(tmp, Settings(max_new_tokens=new_tokens, num_gpus=gpus, dtype="bfloat16",
                                            chat_template="off"), batch_size=16, static_cache=static)
            engine.generate(texts[:16])  # warm-up
            sync(device)
            start = time.perf_counter()
            made = sum(g.new_tokens for g in engine.generate(texts))
            sync(device)
            out["tokens_per_s_static" if static else "tokens_per_s_dynamic"] = round(made / (time.perf_counter()
                                                                                             - start), 1)
            del engine
        compiled = sum(torch._dynamo.utils.counters["frames"].values()) - frames_before
    same = sum(a == b for a, b in zip(greedy[True], greedy[False]))
    return {"ok": same == len(texts) and compiled == 0, "prompts": len(texts), "greedy_same": same,
            "compiled_frames": compiled, **out}


def peak(device: torch.device, given: float | None) -> float | None:
    if given or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and few steps (the CPU path of the tests)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for the MFU")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON object here")
    ap.add_argument("--checks", default=None, help="comma-separated: run only these (e.g. profile,mfu_sweep)")
    ap.add_argument("--variants", default=None, help="comma-separated: only these of the sweep's variants")
    ap.add_argument("--budget-s", type=float, default=math.inf,
                    help="the sweep starts no variant (after its first) this many seconds after it began")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    quick = args.quick
    students = ["tiny-t5"] if quick else ["flan-t5-base", "flan-t5-large"]
    batch = {"tiny-t5": 4, "flan-t5-base": 32, "flan-t5-large": 16}
    input_tokens = 32 if quick else 256
    results: dict[str, Any] = {"bench": "gpu", "device": torch.cuda.get_device_name() if device.type == "cuda"
                               else "cpu", "torch": torch.__version__, "checks": {}}

    def record(name: str, fn: Any) -> None:
        if args.checks and name.split("[")[0] not in args.checks.split(","):
            return
        free(device)
        start = time.perf_counter()
        try:
            figures = fn()
        except Exception as err:  # noqa: BLE001 (a check that raises fails, the others still run and are reported)
            figures = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        figures["seconds"] = round(time.perf_counter() - start, 1)
        results[name] = figures
        results["checks"][name] = bool(figures["ok"])
        print(f"{name}: {'ok' if figures['ok'] else 'FAILED'} {json.dumps(figures)}", flush=True)
        if args.json:  # after every check: a run cut short (a lent machine's time) keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({**results, "ok": all(results["checks"].values())}) + "\n")

    record("step_counts", lambda: step_counts(reference=not quick))
    if not quick:  # a 0.5B model and its copy on the CPU: a minute, not for the default tests
        record("step_counts_causal", causal_step_counts)
    for shape in students:
        record(f"student_step[{shape}]", lambda s=shape: student_step(s, device, batch[s], input_tokens,
                                                                      3 if quick else 10, peak(device,
                                                                                               args.peak_tflops)))
    record("compiled_student", lambda: compiled_student(
        "tiny-t5", device, "default" if quick else "reduce-overhead", batch=4 if quick else 16, steps=5 if quick else 8,
        backend="eager" if quick else None))
    record("fsdp", lambda: fsdp_step(students[0], device, batch[students[0]], input_tokens))
    record("scoring", lambda: scoring(device, 16 if quick else 64))
    record("resume", lambda: resume(device))
    record("hf_engine", lambda: hf_engine("tiny-llama" if quick else "llama-1b", device, 16 if quick else 64,
                                          8 if quick else 64))
    record("profile", lambda: profile_step(students[0], device, batch[students[0]], input_tokens,
                                           peak(device, args.peak_tflops)))
    variants = [v for v in (QUICK_SWEEP if quick else SWEEP) if not args.variants or v[0] in args.variants.split(",")]
    record("mfu_sweep", lambda: mfu_sweep(students[0], device, tuple(variants), input_tokens,
                                          2 if quick else 5, peak(device, args.peak_tflops), args.budget_s))
    results["ok"] = all(results["checks"].values())
    line = json.dumps(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(line + "\n")
    print(line)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
