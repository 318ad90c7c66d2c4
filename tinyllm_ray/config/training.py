"""The config sections of the student's training: ``train`` (the Ray Train fine-tuning and its loss weights),
``eval`` (scoring the student) and ``tune`` (a Ray Tune sweep of the loss weights, with ``RangeConfig`` for a
swept range).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from tinyllm_ray.config.strict import STRICT, Bool, Float, Int, Str


@dataclass(config=STRICT)
class TrainConfig:
    """Ray Train fine-tuning of the student on the multi-task loss."""

    gamma: Float = Field(default=1.0, ge=0)
    """Weight of the answer-prediction loss."""
    alpha: dict[Str, Float] = Field(default_factory=dict)
    """Weight of each teacher's rationale loss, by teacher name; teachers not listed get 1.0."""
    epochs: Int = Field(default=1, ge=1)
    """Passes over the training questions (ignored when ``max_steps`` is set)."""
    max_steps: Int | None = Field(default=None, ge=1)
    """Train exactly this many optimizer steps, over as many passes as that takes (the last one may stop
    mid-epoch), instead of ``epochs`` passes; the learning rate decays to 0 at this step and the last step is
    always checkpointed. ``None``: ``epochs`` passes. The paper trains 10,000 steps whatever the dataset size."""
    batch_size: Int = Field(default=16, ge=1)
    """Questions per step per worker (each question feeds every task)."""
    lr: Float = Field(default=5e-4, gt=0)
    """Peak AdamW learning rate."""
    weight_decay: Float = Field(default=0.0, ge=0)
    """AdamW weight decay."""
    warmup_steps: Int = Field(default=0, ge=0)
    """Linear warm-up steps, then linear decay to 0."""
    max_grad_norm: Float = Field(default=1.0, gt=0)
    """Gradient clipping norm."""
    num_workers: Int = Field(default=1, ge=1)
    """Ray Train workers (data-parallel)."""
    cpus_per_worker: Float = Field(default=1.0, gt=0)
    """CPUs per Train worker."""
    use_gpu: Bool = False
    """One GPU per Train worker."""
    shuffle: Literal["local", "global", "none"] = "local"
    """Per-epoch shuffle: ``local`` = Ray Data's local shuffle buffer (``shuffle_buffer`` rows, reseeded every
    epoch; the faster one, see docs/benchmarks.md), ``global`` = ``random_shuffle`` of the whole dataset every
    epoch (unseeded: a mid-epoch resume may then skip other rows than the ones trained on; its Ray Data tasks
    run during training, so leave CPUs free beside the Train workers), ``none``."""
    shuffle_buffer: Int = Field(default=10_000, ge=0)
    """Rows in Ray Data's local shuffle buffer, reseeded every epoch (0 = no shuffle)."""
    length_bucketing: Int = Field(default=0, ge=0)
    """0 = off. N > 1: read N batches at a time, sort their rows by input length, cut them into N batches
    and train on those in a seeded random order (less padding; batches are still padded to their longest row)."""
    grad_accum_steps: Int = Field(default=1, ge=1)
    """Micro-batches of ``batch_size`` per optimizer step; the step's loss is their mean."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``auto`` = bf16 autocast on GPU, fp32 on CPU; ``bf16`` = bf16 autocast anywhere; ``fp32`` = none.
    Weights and optimizer state stay fp32."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """Data parallelism across workers: ``ddp`` (a full copy per worker) or ``fsdp`` (sharded weights,
    gradients and optimizer state, through ``ray.train.torch.prepare_model``; GPUs only, ``use_gpu: true``)."""
    compile: Literal["off", "default", "reduce-overhead"] = "off"
    """``torch.compile`` the student's training forward and backward (its loss included; evaluation and
    generation stay eager): ``default`` fuses kernels, ``reduce-overhead`` also replays them as CUDA graphs (GPUs).
    Compiling takes minutes at the first steps, so it pays off in runs of hours, not minutes (figures:
    docs/gpu.md).
    Batches then get fixed shapes: lengths padded up to a multiple of ``pad_multiple`` (64 when 0) and every
    task to ``batch_size`` rows, so a few graphs serve the whole run. Not with ``strategy: fsdp``."""
    pad_multiple: Int = Field(default=0, ge=0)
    """Pad every batch's lengths up to a multiple of this many tokens (0: to the longest row; 64 when
    ``compile`` is on)."""
    mode: Literal["prefix", "one_encoder"] = "prefix"
    """``prefix`` (the paper's): one encoder pass per task, the task prefix in the input. ``one_encoder``
    (seq2seq only): the question is encoded once per step and every task is decoded from it, the task
    marker (``predict:``, ``explain_<teacher>:``) leading the decoder input."""
    checkpoint_every: Int | None = Field(default=None, ge=1)
    """Optimizer steps between checkpoints (and valid evaluations); ``None`` = once per epoch. A restarted
    run redoes at most this many steps."""
    keep_checkpoints: Int = Field(default=2, ge=1)
    """Checkpoints kept, the best by valid accuracy (the latest is kept as well, to resume from)."""
    max_failures: Int = Field(default=1, ge=0)
    """Worker-group restarts (from the last checkpoint) before the stage fails."""
    log_every: Int = Field(default=10, ge=1)
    """Steps between log lines from rank 0."""
    seed: Int = 0
    """Seed for weights init of new heads, shuffling and dropout."""


@dataclass(config=STRICT)
class EvalConfig:
    """Accuracy of the student on valid (during training, to pick the checkpoint) and on valid and test at the end."""

    batch_size: Int = Field(default=32, ge=1)
    """Questions per ``generate`` call."""
    replicas: Int = Field(default=1, ge=1)
    """Evaluation actors."""
    num_cpus: Float = Field(default=1.0, gt=0)
    """CPUs per evaluation actor."""
    num_gpus: Float = Field(default=0.0, ge=0)
    """GPUs per evaluation actor."""
    every_steps: Int | None = Field(default=None, ge=1)
    """Also score valid inside training every N optimizer steps (rank 0, batched); ``None`` = only at the
    checkpoints (which are always scored: the best checkpoint on valid is the one exported)."""
    select_on: Literal["rank", "generate"] = "rank"
    """The scorer of the in-training valid accuracy (``valid_accuracy``) that ranks checkpoints:
    ``rank`` (rank classification, one forward pass) or ``generate`` (generate-and-match, the paper's)."""
    max_valid: Int | None = Field(default=None, ge=1)
    """Score only the first N valid questions inside training (the final evaluation uses all of them)."""


@dataclass(config=STRICT)
class RangeConfig:
    """A continuous range of one swept value, sampled by ``random`` or ``optuna`` search."""

    low: Float = Field(ge=0)
    """Smallest value."""
    high: Float = Field(ge=0)
    """Largest value."""
    log: Bool = False
    """Sample uniformly in log space (``low`` must then be above 0); the usual choice for ``lr``."""


# A swept value: a list of values (every one in ``grid`` search, a choice in ``random``/``optuna``) or a range.
SweepValues = list[Float] | RangeConfig


@dataclass(config=STRICT)
class TuneConfig:
    """A Ray Tune sweep of the loss weights (and optionally the learning rate) in place of one training run.

    Every trial trains the student on the one rationale store with its own weights; the best trial on valid
    accuracy becomes the run's student (its best checkpoint is reused) and test accuracy is scored once.
    Values not swept keep the ``train`` section's.
    """

    gamma: SweepValues | None = None
    """Values of the answer-loss weight ``train.gamma``: a list (``[0.5, 1.0]``) or a range
    (``{low: 0.1, high: 2}``)."""
    alpha: dict[Str, SweepValues] = Field(default_factory=dict)
    """Values of each teacher's rationale-loss weight, by teacher name (teachers not listed keep ``train.alpha``)."""
    lr: SweepValues | None = None
    """Values of the learning rate ``train.lr`` (a range usually with ``log: true``)."""
    search: Literal["grid", "random", "optuna"] = "grid"
    """``grid``: every combination of the lists (ranges are not allowed); ``random``: ``num_samples`` random
    draws (lists are choices, ranges uniform or log-uniform); ``optuna``: Optuna's TPE sampler over the same
    space (needs ``pip install optuna``)."""
    num_samples: Int = Field(default=1, ge=1)
    """``grid``: times the whole grid is repeated; ``random``/``optuna``: number of trials."""
    scheduler: Literal["asha", "none"] = "asha"
    """``asha``: asynchronous successive halving on ``valid_accuracy`` stops weak trials at their evaluations;
    ``none``: every trial trains to the end."""
    grace_period: Int = Field(default=1, ge=1)
    """``asha``: evaluations (valid scores, see ``train.checkpoint_every`` and ``eval.every_steps``) every trial
    gets before it may be stopped."""
    reduction_factor: Float = Field(default=3.0, gt=1)
    """``asha``: about 1 in ``reduction_factor`` trials goes on at each rung."""
    leave_one_teacher_out: Bool = False
    """Add one trial per teacher with the ``train`` section's weights and that teacher's alpha set to 0 (and one
    with every teacher), to show what each teacher adds."""
    max_concurrent_trials: Int | None = Field(default=None, ge=1)
    """Trials at once; default: the cluster's CPUs (GPUs with ``train.use_gpu``) over what one trial takes
    (its Train workers, plus one CPU for Ray Data's shuffle with ``train.shuffle: global``), at least 1."""
    seed: Int = 0
    """Seed of the ``random``/``optuna`` draws."""
