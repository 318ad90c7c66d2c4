"""The student stage on Ray Train: tokenised multi-task rows in, the best checkpoint on valid out.

``train_student`` tokenises the text rows with Ray Data (``tokenize`` in ``map_batches``), then runs a
``TorchTrainer`` whose workers stream their shard with ``get_dataset_shard("train")``, reshuffled every
epoch (Ray Data's local shuffle buffer seeded per epoch, or a global ``random_shuffle``), optionally
length-bucketed, and minimise

    gamma * L(answer) + sum_i alpha_i * L(rationale_i)

with AdamW, linear warm-up/decay, gradient clipping and gradient accumulation (``schedule.py``), bf16
autocast on GPU, DDP or FSDP across workers (``ray.train.torch.prepare_model``).

Every ``train.checkpoint_every`` steps (default: every epoch) rank 0 scores the valid split (``eval.select_on``)
and a checkpoint (model, tokenizer, optimizer, scheduler, step) is reported with ``valid_accuracy`` and
``step``; Ray Train keeps the best ``train.keep_checkpoints`` by ``valid_accuracy`` plus the latest.
``eval.every_steps`` adds reports without a checkpoint. A restarted worker group (``FailureConfig``) or a
resubmitted job resumes from the latest checkpoint: it skips the micro-batches the checkpointed steps
consumed in that epoch, so at most ``checkpoint_every`` steps are redone. On one worker with the local
shuffle the skipped rows are exactly the ones trained on; with several workers Ray Data may deal the
blocks to the workers in another order, so the count is exact and the rows may differ. With
``train.max_steps`` the loop runs exactly that many steps, over as many epochs as they take, and stops
mid-epoch at the last one (``epochs`` is then ignored).

Rank 0 logs ``step | loss | per-task loss | samples/s | lr``. Reports also carry the loop's throughput:
``train_samples_per_second`` (all workers, wall clock) and ``train_samples_per_cpu_second`` (rank 0's
questions per CPU-second of its process, a figure that other load on the machine does not move much).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
import ray.train
import ray.train.torch
import torch
import transformers
from transformers import AutoTokenizer

from tinyllm_ray import metrics
from tinyllm_ray.config import Config
from tinyllm_ray.data.schema import Question
from tinyllm_ray.devices import bf16_autocast, is_encoder_decoder, pad_id, train_device, use_bf16
from tinyllm_ray.student.batches import bucketed, collate, layout_of, tokenize
from tinyllm_ray.student.loss import multitask_loss
from tinyllm_ray.student.meter import ThroughputMeter
from tinyllm_ray.student.model import MultiTask, load_student, student_encoder, to_device, unwrap
from tinyllm_ray.student.schedule import Plan, lr_factor, make_plan
from tinyllm_ray.student.scoring import Scorer

log = logging.getLogger("tinyllm_ray.student")
STATE_FILE = "train_state.pt"
SCORE = "valid_accuracy"
PLACEMENT_GROUP = "placement_group"  # the workers' placement group id, in reports when asked for
# Testing only: ``TINYLLM_TEST_FAIL_AT_STEP=k`` with ``TINYLLM_TEST_FAIL_MARKER=FILE`` in the driver's
# environment makes the last worker raise once after step k (the marker file records that it did, so the
# restarted worker group goes on). Read by ``train_student``, never part of the run config.
FAIL_AT_STEP_ENV, FAIL_MARKER_ENV = "TINYLLM_TEST_FAIL_AT_STEP", "TINYLLM_TEST_FAIL_MARKER"
LOOP_CONFIG = "loop"  # the one key of ``train_loop_config``: a ``LoopConfig``


@dataclasses.dataclass(frozen=True)
class FailOnce:
    """The testing hook's order (see ``FAIL_AT_STEP_ENV``): the last worker raises after ``step`` unless
    ``marker`` exists, and writes ``marker`` first."""

    step: int
    marker: str

    @classmethod
    def from_env(cls) -> FailOnce | None:
        step = os.environ.get(FAIL_AT_STEP_ENV)
        return cls(int(step), os.environ[FAIL_MARKER_ENV]) if step else None


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """What every worker of one ``train_student`` run gets (Ray Train's ``train_loop_config`` is a dict:
    this rides in it under ``LOOP_CONFIG``)."""

    config: Config
    plan: Plan
    valid: list[Question]
    fail: FailOnce | None = None
    tag_placement_group: bool = False


def epoch_batches(shard: Any, config: Config, epoch: int, collate_fn: Any,
                  tasks: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """One epoch of collated micro-batches from this worker's shard."""
    tc = config.train
    local = tc.shuffle == "local" and tc.shuffle_buffer > 0
    shuffle = {"local_shuffle_buffer_size": tc.shuffle_buffer if local else None,
               "local_shuffle_seed": tc.seed + epoch if local else None}
    if not tc.length_bucketing:
        yield from shard.iter_torch_batches(batch_size=tc.batch_size, collate_fn=collate_fn, **shuffle)
        return
    rng = np.random.default_rng([tc.seed, epoch])
    for window in shard.iter_batches(batch_size=tc.batch_size * tc.length_bucketing, batch_format="numpy",
                                     **shuffle):
        for batch in bucketed(window, tc.batch_size, rng, tasks):
            yield collate_fn(batch)


class TrainWorker:
    """One Ray Train worker's training state (model, optimizer, scheduler, step, throughput) and the pieces
    of the loop that are not the loop itself: loading and saving checkpoints, valid scoring, reports."""

    def __init__(self, loop: LoopConfig):
        self.config, self.plan, self.valid = loop.config, loop.plan, loop.valid
        self.fail, self.tag_placement_group = loop.fail, loop.tag_placement_group
        c, tc = self.config, self.config.train
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.weights = c.task_weights()
        self.tasks = [t for t, w in self.weights.items() if w != 0]
        transformers.utils.logging.disable_progress_bar()
        transformers.set_seed(tc.seed)
        self.device = train_device()
        self.bf16 = use_bf16(tc.precision, self.device)
        trust = c.student.trust_remote_code
        self.tokenizer = AutoTokenizer.from_pretrained(c.student.model, trust_remote_code=trust)
        self.step, state = 0, None
        checkpoint = ray.train.get_checkpoint()
        if checkpoint:  # a restarted worker group, or a resubmitted run
            with checkpoint.as_directory() as ckpt:
                model = load_student(ckpt, trust)
                state = torch.load(Path(ckpt) / STATE_FILE, weights_only=True)
            self.step = state["step"]
        else:
            model = load_student(c.student.model, trust)
        self.encoder = student_encoder(model, self.tokenizer, c)
        self.layout = self.encoder.layout
        if self.rank == 0:
            log.info("student %s (%s layout) on %s, %d torch threads, bf16 autocast %s", c.student.model,
                     self.layout, self.device, torch.get_num_threads(), "on" if self.bf16 else "off")
        self.model = ray.train.torch.prepare_model(MultiTask(model, self.layout, self.tasks),
                                                   parallel_strategy=tc.strategy)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        total, warmup = self.plan.total_steps, tc.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, warmup, total))
        if state:
            self._load_optimizer(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            epoch, skip = self.plan.micro_done(self.step)
            if self.rank == 0:
                log.info("resumed from checkpoint: epoch %d, step %d (skipping the %d micro-batches of epoch %d "
                         "that step %d had consumed)", epoch, self.step, skip, epoch, self.step)
        self.meter = ThroughputMeter(self.world)  # its log window opens now, when the loop is about to start

    # -- state ------------------------------------------------------------------------------------------

    def _fsdp(self) -> bool:
        return self.config.train.strategy == "fsdp" and self.world > 1

    def _load_optimizer(self, saved: dict) -> None:
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer, saved, options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(saved)

    def _save(self, directory: Path) -> bool:
        """Write the checkpoint files (rank 0); every rank must call it (FSDP gathers the full state)."""
        hf = unwrap(self.model)
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            full = StateDictOptions(full_state_dict=True, cpu_offload=True)
            weights = {k.removeprefix("model."): v for k, v in get_model_state_dict(self.model, options=full).items()}
            optimizer = get_optimizer_state_dict(self.model, self.optimizer, options=full)
        else:
            weights, optimizer = None, self.optimizer.state_dict()
        if self.rank != 0:
            return False
        hf.save_pretrained(directory, state_dict=weights)
        self.tokenizer.save_pretrained(directory)
        torch.save({"optimizer": optimizer, "scheduler": self.scheduler.state_dict(), "step": self.step},
                   directory / STATE_FILE)
        return True

    # -- evaluation and reports -------------------------------------------------------------------------

    def valid_accuracy(self) -> float:
        """Rank 0 scores valid (every rank under FSDP, inside the gathered weights); all ranks get the value."""
        c = self.config
        value = torch.zeros(1, device=self.device)
        gather = contextlib.nullcontext()
        if self._fsdp():
            from torch.distributed.fsdp import FullyShardedDataParallel

            gather = FullyShardedDataParallel.summon_full_params(self.model, writeback=False)
        if self.rank == 0 or self._fsdp():
            self.model.eval()
            with gather:
                scorer = Scorer(unwrap(self.model), self.encoder, c.eval.batch_size, c.student.max_answer_tokens,
                                self.device, self.bf16)
                value[0] = scorer.accuracy(self.valid, c.eval.select_on)
            self.model.train()
        if self.world > 1:
            torch.distributed.broadcast(value, src=0)
        return float(value[0])

    def log_step(self, loss: float, task_losses: dict[str, float]) -> None:
        """Rank 0's log line and gauges every ``train.log_every`` steps."""
        if self.rank != 0 or self.step % self.config.train.log_every:
            return
        rate = self.meter.window_rate()
        per_task = " ".join(f"{t} {v:.3f}" for t, v in task_losses.items())
        log.info("step %d | loss %.4f | %s | %.1f samples/s | lr %.2e",
                 self.step, loss, per_task, rate, self.scheduler.get_last_lr()[0])
        metrics.train_samples_per_second().set(rate)
        for task, value in task_losses.items():
            metrics.train_loss().set(value, tags={"task": task})

    def report(self, epoch: int, numbers: dict[str, float]) -> None:
        accuracy = self.valid_accuracy()
        result = {"step": self.step, "epoch": epoch, SCORE: accuracy, **numbers}
        if self.tag_placement_group:
            group = ray.util.get_current_placement_group()
            result[PLACEMENT_GROUP] = group.id.hex() if group else ""
        if self.rank == 0:
            log.info("valid accuracy (%s) %.4f after %d steps", self.config.eval.select_on, accuracy, self.step)
            metrics.eval_accuracy().set(accuracy, tags={"split": "valid", "scorer": self.config.eval.select_on})
        if not self.plan.is_checkpoint(self.step):
            ray.train.report(result)
            return
        with tempfile.TemporaryDirectory() as tmp:
            saved = self._save(Path(tmp))
            if saved:
                (Path(tmp) / "metrics.json").write_text(json.dumps(result))
            ray.train.report(result, checkpoint=ray.train.Checkpoint.from_directory(tmp) if saved else None,
                             checkpoint_dir_name=f"checkpoint_step{self.step:07d}")

    def maybe_fail(self) -> None:
        """The testing hook (see ``FAIL_AT_STEP_ENV``)."""
        if not self.fail or self.step != self.fail.step or self.rank != self.world - 1:
            return
        marker = Path(self.fail.marker)
        if marker.exists():
            return
        marker.write_text(f"failed once at step {self.step}\n")
        raise RuntimeError(f"injected worker failure at step {self.step} ({FAIL_AT_STEP_ENV}, testing only)")


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    worker = TrainWorker(loop_config[LOOP_CONFIG])
    tc, plan, model, optimizer, meter = worker.config.train, worker.plan, worker.model, worker.optimizer, worker.meter
    collate_fn = functools.partial(collate, tasks=worker.tasks, pad_id=pad_id(worker.tokenizer), layout=worker.layout)
    shard = ray.train.get_dataset_shard("train")
    start_epoch, skip = plan.micro_done(worker.step)
    last: dict[str, float] = {}
    for epoch in range(start_epoch, plan.passes):  # with train.max_steps, the last pass may stop mid-epoch
        model.train()
        meter.start()
        step_loss, pending = 0.0, 0
        for micro, batch in enumerate(epoch_batches(shard, worker.config, epoch, collate_fn, worker.tasks)):
            if epoch == start_epoch and micro < skip:
                continue
            batch = to_device(batch, worker.device)
            closes = plan.closes_window(micro)
            sync = contextlib.nullcontext() if closes or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with bf16_autocast(worker.device, worker.bf16):
                    losses = model(batch)
                loss = losses["_none"] if "_none" in losses else multitask_loss(losses, worker.weights)
                (loss / plan.window(micro)).backward()
            step_loss += float(loss.detach()) / plan.window(micro)
            last.update({t: float(v.detach()) for t, v in losses.items() if t != "_none"})
            pending += 1
            meter.count(batch["rows"])
            if not closes:
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            optimizer.step()
            worker.scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            worker.step += 1
            pending = 0
            worker.log_step(step_loss, last)
            worker.maybe_fail()
            if plan.is_report(worker.step):
                meter.stop()  # valid scoring and the checkpoint are not training time
                worker.report(epoch, {"loss": step_loss, **{f"loss_{t}": v for t, v in last.items()},
                                      **meter.numbers()})
                meter.start(new_window=True)
            step_loss = 0.0
            if worker.step >= plan.total_steps:
                break  # train.max_steps reached (every worker stops at the same step: equal shards)
        if pending:
            raise RuntimeError(f"epoch {epoch}: {pending} micro-batches left after the planned "
                               f"{plan.micro_per_epoch}; the data shard is larger than planned")
        meter.stop()


def tokenized_dataset(examples: pa.Table, config: Config, tasks: list[str], layout: str) -> ray.data.Dataset:
    """Ray Data tokenisation of the text rows, materialised once and reused every epoch."""
    s = config.student
    dataset = (
        ray.data.from_arrow(examples)
        .map_batches(
            tokenize,
            fn_kwargs={"model": s.model, "tasks": tasks, "max_input_tokens": s.max_input_tokens,
                       "max_target_tokens": s.max_target_tokens, "trust_remote_code": s.trust_remote_code,
                       "layout": layout},
            batch_size=256,
            batch_format="numpy",
        )
        .materialize()
    )
    # The per-epoch re-reads of a materialised dataset are instant; their progress bars are only noise.
    dataset.context.enable_progress_bars = False
    return dataset


def student_layout(config: Config) -> str:
    return layout_of(is_encoder_decoder(config.student.model, config.student.trust_remote_code), config.train.mode)


def train_student(examples: pa.Table, config: Config, run_dir: Path,
                  valid: list[Question] | None = None, callbacks: list[Any] | None = None,
                  tokenized: ray.data.Dataset | None = None, tag_placement_group: bool = False) -> dict[str, Any]:
    """Fit the student; returns {"checkpoint": best on valid, "latest", "steps", "seconds", "metrics",
    "best_metrics"}. ``callbacks``: Ray Train ``UserCallback``s for the run (a Tune sweep passes its
    Train->Tune reporter). ``tokenized``: ``examples`` already through ``tokenized_dataset`` (a sweep
    tokenises once for all its trials; columns of tasks this run does not train are ignored).
    ``tag_placement_group``: every report carries ``PLACEMENT_GROUP`` (the workers' group id), so that a
    sweep can free the group of a trial it stopped at once."""
    tasks = [t for t, w in config.task_weights().items() if w != 0]
    tc = config.train
    start = time.perf_counter()
    dataset = tokenized if tokenized is not None else tokenized_dataset(examples, config, tasks,
                                                                         student_layout(config))
    if tc.shuffle == "global":
        dataset = dataset.random_shuffle()  # unseeded: a new order every epoch
    plan = make_plan(config, examples.num_rows)
    valid = list(valid or [])[: config.eval.max_valid]
    loop = LoopConfig(config, plan, valid, FailOnce.from_env(), tag_placement_group)
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
    result = trainer.fit()
    # Ray Train kept the best ``keep_checkpoints`` by valid accuracy (and the latest); of equals, the later step.
    kept = [(c, m) for c, m in result.best_checkpoints or [] if SCORE in m]
    best, best_metrics = max(kept, key=lambda cm: (cm[1][SCORE], cm[1]["step"]),
                             default=(result.checkpoint, result.metrics or {}))
    return {
        "checkpoint": best.path,
        "latest": result.checkpoint.path,
        "steps": int((result.metrics or best_metrics or {}).get("step", plan.total_steps)),
        "seconds": round(time.perf_counter() - start, 3),
        "metrics": dict(result.metrics or {}),
        "best_metrics": dict(best_metrics),
    }
