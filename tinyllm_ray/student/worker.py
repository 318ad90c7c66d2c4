"""One Ray Train worker of the student stage: its state (``TrainWorker``) and its loop (``train_loop_per_worker``,
the function ``TorchTrainer`` runs on every worker).

A worker streams its shard with ``get_dataset_shard("train")`` (``feed.py``), one epoch of micro-batches at a
time, and minimises

    gamma * L(answer) + sum_i alpha_i * L(rationale_i)

for every arm (the student, and with ``compare: true`` its baselines, ``arms.py``) on the same micro-batches,
with AdamW, linear warm-up/decay, gradient clipping and gradient accumulation (``schedule.py``), bf16 autocast
on GPU, DDP or FSDP across workers (``ray.train.torch.prepare_model``). With ``train.max_steps`` the loop runs
exactly that many steps, over as many epochs as they take, and stops mid-epoch at the last one
(``epochs`` is then ignored).

At every report step every rank scores its share of the valid split (``eval.select_on``; the counts are summed
across ranks) and the worker reports ``valid_accuracy`` and ``step`` to Ray Train, with a checkpoint at
checkpoint steps (``checkpoints.py``). Reports also carry the loop's throughput (``meter.py``):
``train_samples_per_second`` (all workers, wall clock), ``train_samples_per_cpu_second`` (rank 0's questions per
CPU-second of its process, a figure that other load on the machine does not move much) and
``train_data_wait_share`` (rank 0's share of training time spent waiting for the next micro-batch). Log lines,
the progress board, gauges and tracking: ``sinks.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import transformers
from transformers import AutoTokenizer

from tinyllm_ray import answers, console, tracking
from tinyllm_ray.config import Config
from tinyllm_ray.data.schema import Question
from tinyllm_ray.devices import pad_id, train_device, use_bf16
from tinyllm_ray.student.arms import (
    ARMS_DIR,
    STUDENT_ARM,
    Arm,
    adamw,
    as_numbers,
    cpu_copy,
    load_state,
    trained_tasks,
)
from tinyllm_ray.student.batches import student_layout
from tinyllm_ray.student.checkpoints import SCORE, WorkerCheckpoints, resume_point, saved_arm
from tinyllm_ray.student.faults import FailOnce
from tinyllm_ray.student.feed import EarlyStart, epoch_batches
from tinyllm_ray.student.meter import ThroughputMeter
from tinyllm_ray.student.model import MultiTask, load_student, prepare_kwargs, student_encoder, to_device, unwrap
from tinyllm_ray.student.schedule import Schedule, lr_factor
from tinyllm_ray.student.scoring import Scorer
from tinyllm_ray.student.sinks import Sinks

log = logging.getLogger("tinyllm_ray.student")
PLACEMENT_GROUP = "placement_group"  # the workers' placement group id, in reports when asked for
LOOP_CONFIG = "loop"  # the one key of ``train_loop_config``: a ``LoopConfig``


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """What every worker of one ``train_student`` run gets (Ray Train's ``train_loop_config`` is a dict:
    this rides in it under ``LOOP_CONFIG``)."""

    config: Config
    plan: Schedule
    valid: list[Question]
    arms: dict[str, dict[str, float]]  # the other arms' loss weights by name (``arms.py``)
    fail: FailOnce | None = None
    tag_placement_group: bool = False
    tracking: tracking.Tracking | None = None  # where rank 0 records its scalars (None: nowhere)


class TrainWorker:
    """One Ray Train worker's training state (its arms: the student and any baselines, ``arms.py``; the step;
    throughput) and the pieces of the loop that are not the loop itself: loading its arms (from a checkpoint
    when resuming), valid scoring, reports."""

    def __init__(self, loop: LoopConfig):
        self.config, self.plan, self.valid = loop.config, loop.plan, loop.valid
        self.fail, self.tag_placement_group = loop.fail, loop.tag_placement_group
        c = self.config
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.fsdp = c.train.strategy == "fsdp" and self.world > 1
        arm_weights = {STUDENT_ARM: c.task_weights(), **loop.arms}
        self.tasks = trained_tasks(arm_weights.values())
        transformers.utils.logging.disable_progress_bar()
        self.device = train_device()
        self.bf16 = use_bf16(c.train.precision, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(c.student.model, trust_remote_code=c.student.trust_remote_code)
        self.checkpoints = WorkerCheckpoints(self.tokenizer, self.rank, self.fsdp, self.device,
                                             c.student.trust_remote_code)
        checkpoint = ray.train.get_checkpoint()  # a restarted worker group, or a resubmitted run
        with resume_point(checkpoint, list(arm_weights), announce=self.rank == 0) as ckpt:
            state = load_state(Path(ckpt)) if ckpt else None
            self.step = state["step"] if state else 0
            # The first epoch's batches start coming now, while the models load (``feed.EarlyStart``).
            self.first_epoch = self.plan.micro_done(self.step)[0]
            self.first_batches = EarlyStart(epoch_batches(
                ray.train.get_dataset_shard("train"), c, self.first_epoch, self.tasks, pad_id(self.tokenizer),
                student_layout(c), pin=self.device.type == "cuda"))
            self.arms = [self._arm(name, weights, Path(ckpt) if ckpt else None, state)
                         for name, weights in arm_weights.items()]
        if state and self.rank == 0:
            epoch, skip = self.plan.micro_done(self.step)
            # A console line on the driver as well (its quiet console shows no worker output).
            console.remote_event(f"resumed from checkpoint: epoch {epoch}, step {self.step} (skipping the {skip} "
                                 f"micro-batches of epoch {epoch} that step {self.step} had consumed)")
        # Progress on the driver's console board: the student's own run only (a sweep shows its trials instead).
        progress = "student" if self.rank == 0 and not loop.tag_placement_group else None
        self.sinks = Sinks(self.rank, self.plan.total_steps, c.train.log_every, progress, loop.tracking,
                           [arm.name for arm in self.arms], self.step)
        self.meter = ThroughputMeter(self.world)  # its log window opens now, when the loop is about to start

    def _arm(self, name: str, weights: dict[str, float], ckpt: Path | None, state: dict[str, Any] | None) -> Arm:
        """Load one arm: from the checkpoint when resuming (``checkpoints.saved_arm``), else from the student
        model; every arm starts from the same weights and seed."""
        c, tc = self.config, self.config.train
        first = name == STUDENT_ARM
        where = saved_arm(ckpt, name)
        transformers.set_seed(tc.seed)
        model = load_student(str(where or c.student.model), c.student.trust_remote_code)
        if first:
            self.encoder = student_encoder(model, self.tokenizer, c)
            self.layout = self.encoder.layout
            if self.rank == 0:
                log.info("student %s (%s layout) on %s, %d torch threads, bf16 autocast %s", c.student.model,
                         self.layout, self.device, torch.get_num_threads(), "on" if self.bf16 else "off")
        tasks = [t for t, w in weights.items() if w != 0]
        prepared = ray.train.torch.prepare_model(MultiTask(model, self.layout, tasks, tc.compile,
                                                           fixed_passes=tc.strategy == "fsdp"),
                                                 parallel_strategy=tc.strategy,
                                                 parallel_strategy_kwargs=prepare_kwargs(model, tc.strategy))
        optimizer = adamw(prepared, tc.lr, tc.weight_decay, tc.strategy)
        total, warmup = self.plan.total_steps, tc.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total))
        arm = Arm(name, weights, prepared, optimizer, scheduler)
        if where is not None:
            self.checkpoints.restore(arm, where, state if first else load_state(where))
        return arm

    def valid_accuracy(self, arm: Arm) -> float:
        """Every rank scores its share of valid (``valid[rank::world]``; under FSDP inside the gathered weights)
        and the right answers are summed over the ranks: scoring takes 1/world of the time one rank would."""
        c = self.config
        share = self.valid[self.rank :: self.world]
        gather = contextlib.nullcontext()
        if self.fsdp:
            from torch.distributed.fsdp import FullyShardedDataParallel

            gather = FullyShardedDataParallel.summon_full_params(arm.model, writeback=False)
        arm.model.eval()
        with gather:
            scorer = Scorer(unwrap(arm.model), self.encoder, c.eval.batch_size, c.student.max_answer_tokens,
                            self.device, self.bf16)
            right = scorer.correct(share, c.eval.select_on, answers.scorer_of(c.data))
        arm.model.train()
        counts = torch.tensor([right, len(share)], dtype=torch.float64, device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(counts)
        right_all, total = counts.tolist()
        return right_all / total if total else 0.0

    def report(self, epoch: int, step_losses: dict[str, torch.Tensor], throughput: dict[str, float]) -> None:
        """Score valid for every arm and report to Ray Train: with a checkpoint at checkpoint steps (where the
        baselines' selections are updated too)."""
        student, others = self.arms[0], self.arms[1:]
        losses = as_numbers(step_losses)
        accuracy = self.valid_accuracy(student)
        result: dict[str, Any] = {"step": self.step, "epoch": epoch, SCORE: accuracy, "loss": losses[student.name],
                                  **{f"loss_{t}": v for t, v in student.task_losses().items()}, **throughput}
        scores = {arm.name: self.valid_accuracy(arm) for arm in others}
        if others:
            result[ARMS_DIR] = {name: {SCORE: v, "loss": losses[name]} for name, v in scores.items()}
        if self.tag_placement_group:
            group = ray.util.get_current_placement_group()
            result[PLACEMENT_GROUP] = group.id.hex() if group else ""
        self.sinks.valid(self.step, self.config.eval.select_on, {student.name: accuracy, **scores})
        if not self.plan.is_checkpoint(self.step):
            ray.train.report(result)
            return
        weights = {arm.name: self.checkpoints.full_weights(arm) for arm in self.arms}
        if self.rank == 0:
            for arm in others:
                arm.consider(scores[arm.name], self.step, lambda w=weights[arm.name]: cpu_copy(w))
        self.checkpoints.report(result, self.arms, weights, self.step)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    worker = TrainWorker(loop_config[LOOP_CONFIG])
    failed = True
    try:
        train_loop(worker)
        failed = False
    finally:
        worker.sinks.close(worker.step, failed)


def train_loop(worker: TrainWorker) -> None:
    tc, plan, meter = worker.config.train, worker.plan, worker.meter
    shard = ray.train.get_dataset_shard("train")
    start_epoch, skip = plan.micro_done(worker.step)
    for epoch in range(start_epoch, plan.passes):  # with train.max_steps, the last pass may stop mid-epoch
        for arm in worker.arms:
            arm.model.train()
        meter.start()
        pending = 0
        if epoch == worker.first_epoch:
            batches = meter.batches(worker.first_batches, startup=True)
        else:
            batches = meter.batches(epoch_batches(shard, worker.config, epoch, worker.tasks,
                                                  pad_id(worker.tokenizer), worker.layout,
                                                  pin=worker.device.type == "cuda"))
        for micro, batch in enumerate(batches):
            if epoch == start_epoch and micro < skip:
                continue
            batch = to_device(batch, worker.device)
            closes = plan.closes_window(micro)
            for arm in worker.arms:  # the same micro-batch for every arm
                arm.backward(batch, plan.window(micro), closes, worker.device, worker.bf16)
            pending += 1
            meter.count(batch["rows"])
            if not closes:
                continue
            losses = {arm.name: arm.optimizer_step(tc.max_grad_norm) for arm in worker.arms}
            worker.step += 1
            pending = 0
            worker.sinks.step(worker.step, worker.arms, losses, meter)
            if worker.fail:
                worker.fail.maybe_raise(worker.step, worker.rank, worker.world)
            if plan.is_report(worker.step):
                meter.stop()  # valid scoring and the checkpoint are not training time
                worker.report(epoch, losses, meter.numbers())
                meter.start(new_window=True)
            if worker.step >= plan.total_steps:
                break  # train.max_steps reached (every worker stops at the same step: equal shards)
        if pending:
            raise RuntimeError(f"epoch {epoch}: {pending} micro-batches left after the planned "
                               f"{plan.micro_per_epoch}; the data shard is larger than planned")
        meter.stop()
