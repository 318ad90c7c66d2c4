"""The student stage on Ray Train: tokenised multi-task rows in, the best checkpoint on valid out.

``train_student`` tokenises the text rows with Ray Data (``tokenize`` in ``map_batches``), then runs a
``TorchTrainer`` whose workers stream their shard with ``get_dataset_shard("train")``, reshuffled every
epoch (Ray Data's local shuffle buffer seeded per epoch, or a global ``random_shuffle``), optionally
length-bucketed, and minimise

    gamma * L(answer) + sum_i alpha_i * L(rationale_i)

with AdamW, linear warm-up/decay, gradient clipping and gradient accumulation (``schedule.py``), bf16
autocast on GPU, DDP or FSDP across workers (``ray.train.torch.prepare_model``). With ``compare: true`` the
baselines (other loss weights) train in the same workers on the same micro-batches (``arms.py``).

Every ``train.checkpoint_every`` steps (default: every epoch) every rank scores its share of the valid split
(``eval.select_on``; the counts are summed across ranks) and a checkpoint (model, tokenizer, optimizer, scheduler, step) is reported with ``valid_accuracy`` and
``step``; Ray Train keeps the best ``train.keep_checkpoints`` by ``valid_accuracy`` plus the latest.
``eval.every_steps`` adds reports without a checkpoint. A restarted worker group (``FailureConfig``) or a
resubmitted job resumes from the latest checkpoint: it skips the micro-batches the checkpointed steps
consumed in that epoch, so at most ``checkpoint_every`` steps are redone. On one worker with the local
shuffle the skipped rows are exactly the ones trained on; with several workers Ray Data may deal the
blocks to the workers in another order, so the count is exact and the rows may differ. With
``train.max_steps`` the loop runs exactly that many steps, over as many epochs as they take, and stops
mid-epoch at the last one (``epochs`` is then ignored).

Rank 0 logs ``step | loss | per-task loss | samples/s | lr``. Reports also carry the loop's throughput:
``train_samples_per_second`` (all workers, wall clock), ``train_samples_per_cpu_second`` (rank 0's questions per
CPU-second of its process, a figure that other load on the machine does not move much) and
``train_data_wait_share`` (rank 0's share of training time spent waiting for the next micro-batch).

Rank 0 also records the same figures per logged step, and every arm's valid accuracy at each evaluation, in
TensorBoard event files (``<run>/tensorboard/<arm>/``) and, with ``tracking.mlflow``, in an MLflow run
(``tinyllm_ray/tracking.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray.data
import ray.train
import ray.train.torch
import torch
import transformers
from transformers import AutoTokenizer

from tinyllm_ray import answers, console, metrics, tracking
from tinyllm_ray.config import Config
from tinyllm_ray.data.schema import Question
from tinyllm_ray.devices import pad_id, train_device, use_bf16
from tinyllm_ray.student.arms import (ARMS_DIR, BEST_DIR, STATE_FILE, STUDENT_ARM, Arm, adamw, as_numbers,
                                     checkpoint_problem, cpu_copy, load_state)
from tinyllm_ray.student.batches import student_layout
from tinyllm_ray.student.faults import FailOnce
from tinyllm_ray.student.feed import EarlyStart, epoch_batches, tokenized_dataset
from tinyllm_ray.student.meter import ThroughputMeter
from tinyllm_ray.student.model import MultiTask, load_student, prepare_kwargs, student_encoder, to_device, unwrap
from tinyllm_ray.student.schedule import Plan, lr_factor, make_plan
from tinyllm_ray.student.scoring import Scorer

log = logging.getLogger("tinyllm_ray.student")
SCORE = "valid_accuracy"
PLACEMENT_GROUP = "placement_group"  # the workers' placement group id, in reports when asked for
LOOP_CONFIG = "loop"  # the one key of ``train_loop_config``: a ``LoopConfig``


CHECKPOINT_PREFIX = "checkpoint_step"  # checkpoint_step0000012: names sort by step


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


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """What every worker of one ``train_student`` run gets (Ray Train's ``train_loop_config`` is a dict:
    this rides in it under ``LOOP_CONFIG``)."""

    config: Config
    plan: Plan
    valid: list[Question]
    arms: dict[str, dict[str, float]]  # the other arms' loss weights by name (``arms.py``)
    fail: FailOnce | None = None
    tag_placement_group: bool = False
    tracking: tracking.Tracking | None = None  # where rank 0 records its scalars (None: nowhere)


def upload_mode(device: torch.device) -> ray.train.CheckpointUploadMode:
    """How a checkpoint reaches the run's storage: in the background on GPU workers, which go on training while a
    large checkpoint (full weights and AdamW state) is copied, instead of every GPU idling through the copy; in
    line on CPU workers. The cost of the background copy: a worker group that fails while it is under way
    resumes from the checkpoint before it (``checkpoint_every`` more steps redone)."""
    return ray.train.CheckpointUploadMode.ASYNC if device.type == "cuda" else ray.train.CheckpointUploadMode.SYNC


class TrainWorker:
    """One Ray Train worker's training state (its arms: the student and any baselines, ``arms.py``; the step;
    throughput) and the pieces of the loop that are not the loop itself: loading and saving checkpoints,
    valid scoring, reports."""

    def __init__(self, loop: LoopConfig):
        self.config, self.plan, self.valid = loop.config, loop.plan, loop.valid
        self.fail, self.tag_placement_group = loop.fail, loop.tag_placement_group
        c = self.config
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        arm_weights = {STUDENT_ARM: c.task_weights(), **loop.arms}
        # Collation builds every task any arm trains; each arm's ``MultiTask`` reads its own.
        self.tasks = list(dict.fromkeys(t for w in arm_weights.values() for t, v in w.items() if v != 0))
        transformers.utils.logging.disable_progress_bar()
        self.device = train_device()
        self.bf16 = use_bf16(c.train.precision, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(c.student.model, trust_remote_code=c.student.trust_remote_code)
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
        self.progress = "student" if self.rank == 0 and not loop.tag_placement_group else None
        self.progress_at = 0.0
        self.tracker = None
        if self.rank == 0 and loop.tracking is not None:
            self.tracker = tracking.TrainLogger(loop.tracking, [arm.name for arm in self.arms], self.step)
        self.meter = ThroughputMeter(self.world)  # its log window opens now, when the loop is about to start

    def _arm(self, name: str, weights: dict[str, float], ckpt: Path | None, state: dict[str, Any] | None) -> Arm:
        """Load one arm: from the checkpoint when resuming (arm 0 at its root, the others under ``arms/``), else
        from the student model; every arm starts from the same weights and seed."""
        c, tc = self.config, self.config.train
        first = name == STUDENT_ARM
        where = None if ckpt is None else ckpt if first else ckpt / ARMS_DIR / name
        if where is not None and not (where / STATE_FILE).is_file():
            raise RuntimeError(f"checkpoint {ckpt} holds no state for {name!r}: it was written by another set of "
                               f"arms; train into a new run directory")
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
            saved = state if first else load_state(where)
            self._load_optimizer(arm, saved["optimizer"])
            arm.scheduler.load_state_dict(saved["scheduler"])
            if saved.get("best") and self.rank == 0:
                arm.best = (float(saved["best"][0]), int(saved["best"][1]))
                arm.best_weights = cpu_copy(load_student(str(where / BEST_DIR), c.student.trust_remote_code)
                                            .state_dict())
        return arm

    # -- state ------------------------------------------------------------------------------------------

    def _fsdp(self) -> bool:
        return self.config.train.strategy == "fsdp" and self.world > 1

    def _load_optimizer(self, arm: Arm, saved: dict) -> None:
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(arm.model, arm.optimizer, saved, options=StateDictOptions(full_state_dict=True))
        else:
            arm.optimizer.load_state_dict(saved)

    def _full_weights(self, arm: Arm) -> dict[str, torch.Tensor]:
        """The arm's full weights (FSDP gathers them to rank 0's CPU: every rank must call it)."""
        if not self._fsdp():
            return unwrap(arm.model).state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return {k.removeprefix("model."): v for k, v in get_model_state_dict(arm.model, options=full).items()}

    def _full_optimizer(self, arm: Arm) -> dict[str, Any]:
        if not self._fsdp():
            return arm.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(arm.model, arm.optimizer, options=full)

    def _save(self, directory: Path, weights: dict[str, dict[str, torch.Tensor]]) -> bool:
        """Write the checkpoint files (rank 0): arm 0 at the root, the others under ``arms/<name>/`` with their
        selection so far in ``best/``; ``weights``: each arm's ``_full_weights``. Every rank must call it."""
        saved = False
        for arm in self.arms:
            optimizer = self._full_optimizer(arm)
            if self.rank != 0:
                continue
            where = directory if arm.name == STUDENT_ARM else directory / ARMS_DIR / arm.name
            where.mkdir(parents=True, exist_ok=True)
            unwrap(arm.model).save_pretrained(where, state_dict=weights[arm.name] if self._fsdp() else None)
            self.tokenizer.save_pretrained(where)
            torch.save({"optimizer": optimizer, "step": self.step, **arm.state()}, where / STATE_FILE)
            if arm.name != STUDENT_ARM:
                arm.save_best(where / BEST_DIR, self.tokenizer)
                (where / BEST_DIR / "metrics.json").write_text(json.dumps(
                    {"step": arm.best[1], SCORE: arm.best[0]} if arm.best else {}))
            saved = True
        return saved

    # -- evaluation and reports -------------------------------------------------------------------------

    def valid_accuracy(self, arm: Arm) -> float:
        """Every rank scores its share of valid (``valid[rank::world]``; under FSDP inside the gathered weights)
        and the right answers are summed over the ranks: scoring takes 1/world of the time one rank would."""
        c = self.config
        share = self.valid[self.rank :: self.world]
        gather = contextlib.nullcontext()
        if self._fsdp():
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

    def log_step(self, step_losses: dict[str, torch.Tensor]) -> None:
        """Rank 0's log line and gauges every ``train.log_every`` steps (the student's per-task losses, then
        each baseline's loss). The only place besides ``report`` where losses are read off the device."""
        if self.progress and time.monotonic() - self.progress_at >= 1.0:  # the step count, at most once a second
            self.progress_at = time.monotonic()
            console.remote_update(self.progress, done=self.step, total=self.plan.total_steps, unit="steps")
        if self.rank != 0 or self.step % self.config.train.log_every:
            return
        student = self.arms[0]
        losses = as_numbers(step_losses)
        last = student.task_losses()
        rate = self.meter.window_rate()
        per_task = " ".join(f"{t} {v:.3f}" for t, v in last.items())
        others = "".join(f" | {a.name} {losses[a.name]:.4f}" for a in self.arms[1:])
        log.info("step %d | loss %.4f | %s | %.1f samples/s | lr %.2e%s",
                 self.step, losses[student.name], per_task, rate, student.scheduler.get_last_lr()[0], others)
        if self.progress:
            console.remote_update(self.progress, extra=f"loss {losses[student.name]:.4f} | {rate:.1f} samples/s")
        metrics.train_samples_per_second().set(rate)
        for task, value in last.items():
            metrics.train_loss().set(value, tags={"task": task})
        if self.tracker is not None:
            for arm in self.arms:
                tasks = last if arm is student else arm.task_losses()
                values = {tracking.LOSS: losses[arm.name], tracking.LR: arm.scheduler.get_last_lr()[0],
                          **{tracking.task_loss(t): v for t, v in tasks.items()}}
                if arm is student:
                    values[tracking.SAMPLES_PER_SECOND] = rate
                self.tracker.scalars(arm.name, self.step, values)

    def report(self, epoch: int, step_losses: dict[str, torch.Tensor], throughput: dict[str, float]) -> None:
        """Score valid for every arm and report to Ray Train: with a checkpoint at checkpoint steps (where the
        baselines' selections are updated too). The checkpoint is written to a local directory, which Ray Train
        uploads to the run's storage (in the background on GPU workers, ``upload_mode``) and then deletes."""
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
        if self.rank == 0:
            log.info("valid accuracy (%s) %.4f after %d steps%s", self.config.eval.select_on, accuracy, self.step,
                     "".join(f" | {n} {v:.4f}" for n, v in scores.items()))
            metrics.eval_accuracy().set(accuracy, tags={"split": "valid", "scorer": self.config.eval.select_on})
        if self.tracker is not None:
            for name, value in {student.name: accuracy, **scores}.items():
                self.tracker.scalars(name, self.step, {tracking.VALID_ACCURACY: value})
        if not self.plan.is_checkpoint(self.step):
            ray.train.report(result)
            return
        weights = {arm.name: self._full_weights(arm) for arm in self.arms}
        if self.rank == 0:
            for arm in others:
                arm.consider(scores[arm.name], self.step, lambda w=weights[arm.name]: cpu_copy(w))
        tmp = Path(tempfile.mkdtemp(prefix="tinyllm-checkpoint-"))
        saved = self._save(tmp, weights)
        if saved:
            (tmp / "metrics.json").write_text(json.dumps(result))
        else:
            tmp.rmdir()  # this rank wrote nothing (only rank 0 writes); the empty directory is ours
        ray.train.report(result, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)) if saved else None,
                         checkpoint_dir_name=f"{CHECKPOINT_PREFIX}{self.step:07d}",
                         checkpoint_upload_mode=upload_mode(self.device), delete_local_checkpoint_after_upload=True)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    worker = TrainWorker(loop_config[LOOP_CONFIG])
    failed = True
    try:
        train_loop(worker)
        failed = False
    finally:
        if worker.tracker is not None:
            worker.tracker.close(failed)
        if worker.progress:
            console.remote_update(worker.progress, done=worker.step, finished=True)


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
            worker.log_step(losses)
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


def train_student(examples: pa.Table, config: Config, run_dir: Path,
                  valid: list[Question] | None = None, callbacks: list[Any] | None = None,
                  tokenized: ray.data.Dataset | None = None, tag_placement_group: bool = False,
                  arms: dict[str, Config] | None = None, track: tracking.Tracking | None = None) -> dict[str, Any]:
    """Fit the student; returns {"checkpoint": best on valid, "latest", "steps", "seconds", "metrics",
    "best_metrics", "arms"}. ``callbacks``: Ray Train ``UserCallback``s for the run (a Tune sweep passes its
    Train->Tune reporter). ``tokenized``: ``examples`` already through ``tokenized_dataset`` (a sweep
    tokenises once for all its trials; columns of tasks this run does not train are ignored).
    ``tag_placement_group``: every report carries ``PLACEMENT_GROUP`` (the workers' group id), so that a
    sweep can free the group of a trial it stopped at once. ``arms``: more students to train beside this one
    on the same batches (``arms.py``), by name; their configs may differ from ``config`` only in the loss
    weights. ``"arms"`` of the result: for each, {"checkpoint": its best on valid, "best_metrics"}. ``track``:
    where rank 0 records its scalars (default: ``tracking.for_run(config, run_dir)``, from ``config.tracking``)."""
    arms = dict(arms or {})
    for name, other in arms.items():
        if dataclasses.replace(other, train=config.train) != config or name == STUDENT_ARM:
            raise ValueError(f"arm {name!r} differs from the student in more than its loss weights")
    weights = [config.task_weights(), *(a.task_weights() for a in arms.values())]
    tasks = list(dict.fromkeys(t for w in weights for t, v in w.items() if v != 0))
    tc = config.train
    start = time.perf_counter()
    dataset = tokenized if tokenized is not None else tokenized_dataset(examples, config, tasks,
                                                                         student_layout(config))
    if tc.shuffle == "global":
        dataset = dataset.random_shuffle()  # unseeded: a new order every epoch
    plan = make_plan(config, examples.num_rows)
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
