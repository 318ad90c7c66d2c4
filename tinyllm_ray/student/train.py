"""The student stage on Ray Train: tokenised multi-task rows in, a fine-tuned student directory out.

``train_student`` tokenises the text rows with Ray Data (``Tokenize`` in ``map_batches``), then runs a
``TorchTrainer`` whose workers stream their shard with ``get_dataset_shard("train")``, reshuffled every
epoch by Ray Data's local shuffle buffer (seeded per epoch), and minimise

    gamma * L(answer) + sum_i alpha_i * L(rationale_i)

with AdamW, linear warm-up/decay and gradient clipping. Every epoch ends in a checkpoint (model,
tokenizer, optimizer and step) under ``<run>/train/student``; a restarted worker group resumes from
the latest one. Rank 0 logs ``step | loss | per-task loss | samples/s | lr``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray.data
import ray.train
import ray.train.torch
import torch
import transformers
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from tinyllm_ray import metrics
from tinyllm_ray.config import Config
from tinyllm_ray.student.batches import Tokenize, collate
from tinyllm_ray.student.loss import multitask_loss, token_cross_entropy

log = logging.getLogger("tinyllm_ray.student")
STATE_FILE = "train_state.pt"


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    config: Config = loop_config["config"]
    steps_per_epoch: int = loop_config["steps_per_epoch"]
    weights = config.task_weights()
    tasks = [t for t, w in weights.items() if w != 0]
    tc = config.train
    rank = ray.train.get_context().get_world_rank()
    world = ray.train.get_context().get_world_size()

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(tc.seed)
    trust = config.student.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(config.student.model, trust_remote_code=trust)
    total_steps = max(1, steps_per_epoch * tc.epochs)
    start_epoch, step, state = 0, 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a restarted worker group, or a resubmitted run: continue where the last epoch ended
        with checkpoint.as_directory() as ckpt:
            model = AutoModelForSeq2SeqLM.from_pretrained(ckpt)
            state = torch.load(Path(ckpt) / STATE_FILE, weights_only=True)
        start_epoch, step = state["epoch"] + 1, state["step"]
        if rank == 0:
            log.info("resumed from checkpoint: epoch %d, step %d", start_epoch, step)
    else:
        model = AutoModelForSeq2SeqLM.from_pretrained(config.student.model, trust_remote_code=trust)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, tc.warmup_steps, total_steps))
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])

    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    shard = ray.train.get_dataset_shard("train")
    pad_id = tokenizer.pad_token_id

    for epoch in range(start_epoch, tc.epochs):
        model.train()
        seen, window_start, totals = 0, time.perf_counter(), {t: 0.0 for t in tasks}
        batches = shard.iter_torch_batches(
            batch_size=tc.batch_size,
            collate_fn=lambda b: collate(b, tasks, pad_id),
            local_shuffle_buffer_size=tc.shuffle_buffer or None,
            local_shuffle_seed=tc.seed + epoch if tc.shuffle_buffer else None,
        )
        epoch_loss, epoch_batches = 0.0, 0
        for batch in batches:
            task_losses = {}
            for task in tasks:
                if batch[task] is None:
                    continue
                inputs = {k: v.to(device) for k, v in batch[task].items()}
                logits = model(**inputs).logits
                task_losses[task] = token_cross_entropy(logits, inputs["labels"])
            if task_losses:
                loss = multitask_loss(task_losses, weights)
            else:  # no weighted task has a target in this batch (gamma = 0, no rationales): a zero step
                loss = sum(p.sum() for p in model.parameters()) * 0.0  # keeps DDP ranks in step
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            seen += batch["rows"]
            epoch_loss, epoch_batches = epoch_loss + float(loss), epoch_batches + 1
            for task, value in task_losses.items():
                totals[task] = float(value)
            if rank == 0 and step % tc.log_every == 0:
                rate = seen * world / max(time.perf_counter() - window_start, 1e-9)
                per_task = " ".join(f"{t} {v:.3f}" for t, v in totals.items())
                log.info("step %d | loss %.4f | %s | %.1f samples/s | lr %.2e",
                         step, float(loss), per_task, rate, scheduler.get_last_lr()[0])
                metrics.train_samples_per_second().set(rate)
                for task, value in totals.items():
                    metrics.train_loss().set(value, tags={"task": task})
                seen, window_start = 0, time.perf_counter()
        epoch_metrics = {"epoch": epoch, "step": step, "loss": epoch_loss / max(epoch_batches, 1)}
        epoch_metrics.update({f"loss_{t}": v for t, v in totals.items()})
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                unwrapped = model.module if hasattr(model, "module") else model
                unwrapped.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "epoch": epoch, "step": step}, Path(tmp) / STATE_FILE)
                (Path(tmp) / "metrics.json").write_text(json.dumps(epoch_metrics))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(epoch_metrics, checkpoint=ckpt)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def tokenized_dataset(examples: pa.Table, config: Config, tasks: list[str]) -> ray.data.Dataset:
    """Ray Data tokenisation of the text rows, materialised once and reused every epoch."""
    s = config.student
    dataset = (
        ray.data.from_arrow(examples)
        .map_batches(
            Tokenize,
            fn_constructor_kwargs={"model": s.model, "tasks": tasks, "max_input_tokens": s.max_input_tokens,
                                   "max_target_tokens": s.max_target_tokens,
                                   "trust_remote_code": s.trust_remote_code},
            batch_size=256,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=1),
        )
        .materialize()
    )
    # The per-epoch re-reads of a materialised dataset are instant; their progress bars are only noise.
    dataset.context.enable_progress_bars = False
    return dataset


def train_student(examples: pa.Table, config: Config, run_dir: Path) -> dict[str, Any]:
    """Fit the student; returns {"checkpoint": path, "steps", "seconds", "metrics"}."""
    tasks = [t for t, w in config.task_weights().items() if w != 0]
    tc = config.train
    start = time.perf_counter()
    dataset = tokenized_dataset(examples, config, tasks)
    # streaming_split(equal=True) gives every worker the same number of rows.
    rows_per_worker = examples.num_rows // tc.num_workers
    steps_per_epoch = math.ceil(rows_per_worker / tc.batch_size)
    trainer = ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config, "steps_per_epoch": steps_per_epoch},
        scaling_config=ray.train.ScalingConfig(
            num_workers=tc.num_workers, use_gpu=tc.use_gpu, resources_per_worker={"CPU": tc.cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name="student",
            storage_path=str((run_dir / "train").resolve()),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
        ),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    return {
        "checkpoint": result.checkpoint.path,
        "steps": int(result.metrics["step"]),
        "seconds": round(time.perf_counter() - start, 3),
        "metrics": dict(result.metrics),
    }
