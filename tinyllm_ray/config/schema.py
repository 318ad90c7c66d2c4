"""The run configuration's schema: nested, documented dataclasses, one per YAML section.

A run is described by one YAML file (see ``configs/quickstart.yaml``) whose sections map onto these
dataclasses. Every field's type is checked in strict mode (pydantic dataclasses): ``"3"`` is not an int,
``1`` is not a bool, and no float may be NaN or infinite. Loading lives in ``loading.py``, the rules that
span fields in ``checks.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, Strict
from pydantic.dataclasses import dataclass

# NaN and infinity are never a valid setting: a NaN weight trains nothing, and NaN != NaN would make
# the run's own config differ from itself when a resumed run is compared with the saved one.
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
# Strict scalars: "3" is not an int and 1 is not a bool (YAML typos surface as errors, not coercions).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]


# The two rationale sources in the TinyLLM authors' precomputed files (see data/official.py).
PRECOMPUTED_TEACHERS = ("flan-t5-xl", "llama-2-chat")
# The built-in synthetic dataset's generator writes one reference rationale per question.
SYNTHETIC_TEACHERS = ("reference",)


def precomputed_teachers(data: DataConfig) -> tuple[str, ...]:
    """The teachers that ``data.rationales: precomputed`` imports for this dataset's format."""
    if data.rationales != "precomputed":
        return ()
    synthetic = data.format == "synthetic" or (data.format is None and data.dataset == "synthetic")
    return SYNTHETIC_TEACHERS if synthetic else PRECOMPUTED_TEACHERS


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending key(s)."""


# The built-in dataset's largest split: it is generated in the driver before anything else runs (100,000 in
# about 5 s); a fuzz run's n_train of 9,999,999 held the entry point for minutes.
SYNTHETIC_MAX = 100_000


@dataclass(config=_STRICT)
class DataConfig:
    """Which questions to distil on."""

    # Stage keys leave these out at these values: multiple-choice runs keep the keys they had before open tasks.
    KEY_OMITTED: ClassVar[dict[str, tuple[Any, ...]]] = {"task": (None, "choice"), "scorer": (None,)}

    dataset: Str = "synthetic"
    """``synthetic`` (built in), a paper dataset (``obqa``, ``arc_easy``, ``piqa``, ...), or any name with a path."""
    format: Literal["synthetic", "official", "hub", "jsonl"] | None = None
    """How to read it; inferred when left out: ``synthetic``, ``official`` (the TinyLLM authors' layout,
    ``<name>_<split>.json`` + ``llm/``), ``hub`` (a hub dataset's schema, by name or local files), ``jsonl``
    (any JSON/JSONL/Parquet with ``columns``)."""
    path: Str | None = None
    """Directory (or file, for ``jsonl``) to read; for ``hub`` without a path the dataset is loaded by hub name."""
    revision: Str | None = None
    """``hub`` by name: the hub revision to load (a commit SHA pins the data; a tag or branch follows it).
    Default: the reader's own (``refs/convert/parquet`` for PIQA and RiddleSense, else the main branch), and the
    run logs the commit it got, with the ``--set data.revision=...`` that pins it."""
    columns: dict[Str, Str] = Field(default_factory=dict)
    """``jsonl`` only: source column of ``question``, ``choices``, ``answer`` (text, letter or index), ``id``, ``context``;
    without ``choices`` the questions are open ones (the answer column holds the answer text or number)."""
    task: Literal["choice", "open"] | None = None
    """``choice`` (multiple choice, the paper's datasets) or ``open`` (no options; the answer is a short text or a
    number: GSM8K, SVAMP, your own question/answer pairs). Default: ``open`` when most training questions have no
    choices (the ``gsm8k``/``svamp`` readers, a ``jsonl`` mapping without ``choices``), else ``choice``. Rows of the
    other kind are rejected with their reason."""
    scorer: Literal["exact", "numeric"] | None = None
    """Open tasks: how an answer is compared with the gold one: ``exact`` (normalised exact match: case,
    whitespace, punctuation and articles ignored) or ``numeric`` (the final number of the answer, thousands
    separators and trailing units tolerated). Default: ``numeric`` when every gold training answer is a number,
    else ``exact``. Multiple-choice tasks always match options."""
    rationales: Literal["teachers", "precomputed"] = "teachers"
    """``precomputed``: import the authors' rationales (``official`` format) as teachers ``flan-t5-xl`` and
    ``llama-2-chat`` (``synthetic``: the generator's reference rationales as teacher ``reference``) instead
    of, or besides, running teachers."""
    strict: Bool = False
    """Fail on the first invalid row instead of rejecting it (rejects are counted and written to ``rejects.jsonl``)."""
    valid_fraction: Float = Field(default=0.1, gt=0, lt=1)
    """Share of train held out (seeded) as valid when the dataset has no valid split."""
    max_train: Int | None = Field(default=None, ge=1)
    """Use only the first N training questions (smoke runs on real data)."""
    n_train: Int = Field(default=256, ge=1, le=SYNTHETIC_MAX)
    """Training questions to generate (``synthetic`` only; at most 100,000, about 5 s to make: the built-in
    dataset is for demos and tests, larger data comes as files)."""
    n_valid: Int = Field(default=64, ge=1, le=SYNTHETIC_MAX)
    """Validation questions to generate (``synthetic`` only; at most 100,000)."""
    n_test: Int = Field(default=64, ge=1, le=SYNTHETIC_MAX)
    """Test questions to generate (``synthetic`` only; at most 100,000)."""
    min_choices: Int = Field(default=2, ge=2, le=5)
    """Fewest answer options per question (``synthetic`` only)."""
    max_choices: Int = Field(default=5, ge=2, le=5)
    """Most answer options per question (``synthetic`` only)."""
    seed: Int = 0
    """Seed of the dataset generator."""


@dataclass(config=_STRICT)
class TeacherPromptConfig:
    """A teacher's prompt in other words (each key left out keeps the default text of ``prompts.py``). Any
    change is part of the teacher's generation settings: its rationales and answers are generated again."""

    instruction: Str | None = None
    """First line of the rationale prompt; default "The following are multiple-choice questions with their
    correct answers."."""
    explain_request: Str | None = None
    """The request after the gold answer, with ``{answer}`` where the answer goes (e.g. ``(b) 12``); default
    "Explain step by step why {answer} is the correct answer."."""
    rationale_lead: Str | None = None
    """The line the teacher continues (and that leads each example's rationale); default "Explanation:"."""
    answer_label: Str | None = None
    """The label before each example's and the question's gold answer; default "Answer:"."""
    answer_instruction: Str | None = None
    """First line of the prompt with which the teacher answers valid and test questions itself (it must still
    conclude with "The answer is ..." to be scored); default "The following are multiple-choice questions.
    Explain step by step, then give the answer."."""


@dataclass(config=_STRICT)
class TeacherConfig:
    """One teacher LLM: where it lives, how it runs, how it samples."""

    name: Str
    """Short unique name; the student's task prefix is ``explain_<name>:``."""
    model: Str
    """Local directory (starts with ``/``, ``.`` or ``~``) or a Hugging Face hub id."""
    engine: Literal["hf", "vllm"] = "hf"
    """Inference engine: ``vllm`` (causal LMs; continuous batching, prefix caching, tensor parallel over the
    replica's GPUs) or ``hf`` = transformers ``generate`` (any model, including T5/FLAN-T5, which vLLM
    does not serve)."""
    replicas: Annotated[int, Strict(), Field(ge=1)] | Literal["auto"] = 1
    """Actor replicas, each loading its own copy of the model. ``auto`` (teachers with GPUs): as many as the
    cluster's GPUs hold while every teacher runs side by side (its live nodes and the nodes its ``ray up``
    autoscaler may add; the GPUs of teachers with a fixed count are set aside first), at least 1; a teacher
    without GPUs gets 1. Decided when the job connects to Ray, and logged."""
    num_gpus: Float = Field(default=0.0, ge=0)
    """GPUs per replica: a fraction of one GPU (replicas share it; ``vllm`` then takes that share of its
    memory) or whole GPUs (``vllm``: tensor parallel over them; ``hf``: the model's layers spread over them,
    ``device_map="auto"``). ``vllm`` on a cluster with GPUs needs some: with 0 it would take a GPU Ray does
    not account for."""
    num_cpus: Float = Field(default=1.0, gt=0)
    """CPUs per replica."""
    batch_size: Int | None = Field(default=None, ge=1)
    """``hf``: prompts per ``generate`` batch (default 8; an actor call takes 4 batches, sorted by length);
    ``vllm``: prompts per actor call (default 256; vLLM's scheduler batches continuously inside it)."""

    def prompts_per_batch(self) -> int:
        """``batch_size`` with the engine's default filled in."""
        return self.batch_size or (256 if self.engine == "vllm" else 8)
    shots: Int = Field(default=2, ge=0)
    """In-context examples per prompt, from the training split, never the question itself."""
    shots_mode: Literal["random", "generated", "similar"] = "random"
    """Where the examples come from: ``random`` (seeded draw, shown with their answers), ``generated``
    (the teacher first explains a pool of training questions zero-shot; those rationales are shown with
    the examples), ``similar`` (the most similar training questions by TF-IDF word overlap)."""
    shot_pool: Int = Field(default=32, ge=1)
    """``generated`` only: training questions the teacher explains first to serve as examples."""
    max_new_tokens: Int = Field(default=64, ge=1)
    """Longest rationale, in tokens."""
    temperature: Float = Field(default=0.0, ge=0)
    """0 = greedy decoding."""
    top_p: Float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling mass (when temperature > 0)."""
    seed: Int = 0
    """Seed for shot selection and sampling."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype; ``auto`` = bfloat16 on GPU, float32 on CPU. Not ``float16`` for T5-family models
    (T5, FLAN-T5, mT5, UMT5, LongT5): their activations overflow it."""
    max_model_len: Int | None = Field(default=None, ge=16)
    """Context length (prompt + rationale) in tokens; default: the model's. Prompts that do not fit with
    ``max_new_tokens`` drop examples first, then are rejected (``prompt_too_long``)."""
    chat_template: Literal["auto", "on", "off"] = "auto"
    """``auto``: wrap the prompt in the tokenizer's chat template (one user turn, with whatever default system
    prompt the template adds) when it has one; ``on``: the same, and an error when the tokenizer has none (an
    instruct model whose template went missing); ``off``: the raw text, which a base model continues."""
    min_rationale_words: Int = Field(default=3, ge=1)
    """Rationales with fewer words are rejected (``too_short``)."""
    gpu_memory_utilization: Float | None = Field(default=None, gt=0, le=1)
    """``vllm``: share of each GPU's memory for weights and KV cache (on CPU: of host memory); default 0.9
    on GPU, 0.2 on CPU. A replica with a fraction of one GPU (``num_gpus`` below 1) gets that fraction of
    the default (0.45 for 0.5) and may not be given more than the fraction itself. At start vLLM waits up to
    180 s for this much to be free (a previous teacher's memory being released)."""
    enforce_eager: Bool | None = None
    """``vllm``: skip graph capture/compilation (faster start, slower decoding); default: on CPU only."""
    trust_remote_code: Bool = False
    """Allow the model repo's own Python code (off unless you trust the model)."""
    prompt: TeacherPromptConfig | None = None
    """The prompt's own words (instruction, explanation request, leads), for domains that need others; see
    ``TeacherPromptConfig``. Either the keys themselves or the name of a YAML template file holding them
    (relative to the config file). ``<run>/prompts/<teacher>.txt`` shows one resolved prompt."""
    evaluate: Bool = True
    """Also let the teacher answer the valid and test questions by itself (few-shot chain of thought without
    the gold answer, same examples mode), so the report shows its own accuracy beside the student's."""


@dataclass(config=_STRICT)
class StudentConfig:
    """The small model being distilled: an HF seq2seq model (T5/FLAN-T5) or a causal LM (Llama, Qwen, ...)."""

    model: Str
    """Local directory or hub id of the student's starting weights; seq2seq or causal is read from its config."""
    max_input_tokens: Int = Field(default=256, ge=8)
    """Inputs (task prefix + question + options) are truncated to this many tokens (causal: the prompt part)."""
    max_target_tokens: Int = Field(default=128, ge=4)
    """Answer and rationale targets are truncated to this many tokens (causal: appended to the prompt,
    which is masked out of the loss)."""
    max_answer_tokens: Int = Field(default=16, ge=1)
    """Tokens generated when the student answers at evaluation."""
    trust_remote_code: Bool = False
    """Allow the model repo's own Python code."""
    answer_prefix: Str = "predict: "
    """The task prefix before a question whose answer the student learns and gives (one-encoder mode: its
    decoder marker). Changing it retrains the student; ``tinyllm predict`` reads it from the run's config."""
    rationale_prefix: Str = "explain_{teacher}: "
    """The task prefix before a question whose teacher's rationale the student learns, with ``{teacher}`` where
    the teacher's name goes (each teacher needs its own prefix)."""

    # Stage keys leave the prefixes out at their defaults: students trained before they were settable keep their keys.
    KEY_OMITTED: ClassVar[dict[str, tuple[Any, ...]]] = {"answer_prefix": ("predict: ",),
                                                         "rationale_prefix": ("explain_{teacher}: ",)}


@dataclass(config=_STRICT)
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
    Measured on one H200 (FLAN-T5-base shape, batch 32; docs/gpu.md): 570 ms per step eager, 106 ms with
    ``reduce-overhead``, after about 4 minutes of compiling at the first steps: for runs of hours, not minutes.
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


@dataclass(config=_STRICT)
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


@dataclass(config=_STRICT)
class OutputConfig:
    """Where the run directory lives and what to do when it exists."""

    dir: Str = "runs"
    """Parent directory of run directories (on a multi-node cluster: storage every node sees)."""
    run_name: Str = Field(default="quickstart", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Run directory name under ``dir``."""
    if_exists: Literal["resume", "error", "new"] = "resume"
    """Run dir already there: ``resume`` (same config only: reuse finished stages), ``error``, or ``new`` (``<name>-2``, ...)."""
    access: Literal["owner", "group-read", "group-write"] = "owner"
    """Who may open the run directory (and so its exports): ``owner`` only (mode 0700), ``group-read`` (0750) or
    ``group-write`` (0770, a team resuming each other's runs on shared storage; resuming a sweep then trusts
    the group, as its saved state is loaded with pickle)."""


@dataclass(config=_STRICT)
class RayConfig:
    """How the driver reaches Ray."""

    address: Str | None = None
    """``None``: the cluster of ``ray job submit``/``RAY_ADDRESS``/``ray start`` if any, else a new local one."""
    num_cpus: Int | None = Field(default=None, ge=1)
    """CPUs of a new local cluster (default: all)."""


@dataclass(config=_STRICT)
class MlflowConfig:
    """Where the student's training is recorded in MLflow (``pip install 'tinyllm-ray[tracking]'``): one MLflow
    run per training run (per trial in a sweep) with its parameters (loss weights, lr, batch size, student
    model, teachers, ...) and the same metrics as the TensorBoard files."""

    tracking_uri: Str | None = None
    """An MLflow tracking server (``http://host:5000``), a database (``sqlite:///mlflow.db``: needs the full
    ``mlflow`` package) or a ``file://`` store; ``None``: the file store ``<run>/mlruns``. A multi-node run needs
    a server, or a ``file://`` path on storage every node sees."""
    experiment: Str = "tinyllm"
    """The MLflow experiment (created when it does not exist)."""
    run_name: Str | None = None
    """The MLflow run's name; ``None``: the run directory's name (a sweep's trials: Tune's trial names)."""
    tags: dict[Str, Str] = Field(default_factory=dict)
    """Extra tags on every MLflow run."""


@dataclass(config=_STRICT)
class TrackingConfig:
    """Experiment tracking of the student's training (scalars per logged step and per evaluation). Changing
    it never retrains: a resumed run with other tracking settings reuses its finished stages."""

    tensorboard: Bool = True
    """Write TensorBoard event files under ``<run>/tensorboard/`` (a sweep's trials: under
    ``<run>/tune/trials/<trial id>/tensorboard/``, beside Ray Tune's own in ``<run>/tune/sweep/``)."""
    mlflow: MlflowConfig | None = None
    """Also record the training in MLflow (``None``: off)."""


@dataclass(config=_STRICT)
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


@dataclass(config=_STRICT)
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


@dataclass(config=_STRICT)
class Config:
    """A whole distillation run."""

    student: StudentConfig
    data: DataConfig = Field(default_factory=DataConfig)
    teachers: list[TeacherConfig] = Field(default_factory=list)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    tiny_models: Str | None = None
    """Build the tiny local models into this directory first (smoke runs, quickstart): the random-weight ones,
    and the two teachers trained on CPU (``skilled-a``, ``skilled-b``: a few minutes, once) when a teacher's
    ``model`` is one of them."""
    tune: TuneConfig | None = None
    """A Ray Tune sweep of the loss weights instead of one training run (``None``: no sweep)."""
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """Experiment tracking: TensorBoard event files (on by default) and optionally MLflow."""
    compare: Bool = False
    """Also train the baselines with the same budget and selection on valid: label-only fine-tuning and each
    teacher alone (distilling step-by-step); the report's comparison table puts them beside the teachers' own
    accuracy and the multi-teacher student. Not with ``tune``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def alpha_of(self, teacher: str) -> float:
        return self.train.alpha.get(teacher, 1.0)

    def teacher_names(self) -> list[str]:
        """Every rationale source: the precomputed teachers (if imported), then the configured ones."""
        return list(precomputed_teachers(self.data)) + [t.name for t in self.teachers]

    def task_weights(self) -> dict[str, float]:
        """Loss weight per student task: ``answer`` then one per teacher, in config order."""
        return {"answer": self.train.gamma, **{name: self.alpha_of(name) for name in self.teacher_names()}}

