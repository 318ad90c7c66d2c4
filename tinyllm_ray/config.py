"""Typed run configuration: nested dataclasses, YAML loading, ``--set a.b=c`` overrides, validation.

A run is described by one YAML file (see ``configs/quickstart.yaml``) whose sections map onto the
dataclasses below. ``load_config(path, overrides)`` parses it, applies overrides such as
``train.epochs=3`` or ``teachers.0.replicas=2``, checks every field's type (pydantic dataclasses,
strict mode) and then the rules that span fields (``validate``). Every problem is reported as a
``ConfigError`` naming the key, before Ray starts.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

_STRICT = ConfigDict(extra="forbid")
# Strict scalars: "3" is not an int and 1 is not a bool (YAML typos surface as errors, not coercions).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; configs mean a float (learning rates), as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


# The two rationale sources in the TinyLLM authors' precomputed files (see data/official.py).
PRECOMPUTED_TEACHERS = ("flan-t5-xl", "llama-2-chat")
# The built-in synthetic dataset's generator writes one reference rationale per question.
SYNTHETIC_TEACHERS = ("reference",)


def precomputed_teachers(data: "DataConfig") -> tuple[str, ...]:
    """The teachers that ``data.rationales: precomputed`` imports for this dataset's format."""
    if data.rationales != "precomputed":
        return ()
    synthetic = data.format == "synthetic" or (data.format is None and data.dataset == "synthetic")
    return SYNTHETIC_TEACHERS if synthetic else PRECOMPUTED_TEACHERS


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending key(s)."""


@dataclass(config=_STRICT)
class DataConfig:
    """Which questions to distil on."""

    dataset: Str = "synthetic"
    """``synthetic`` (built in), a paper dataset (``obqa``, ``arc_easy``, ``piqa``, ...), or any name with a path."""
    format: Literal["synthetic", "official", "hub", "jsonl"] | None = None
    """How to read it; inferred when left out: ``synthetic``, ``official`` (the TinyLLM authors' layout,
    ``<name>_<split>.json`` + ``llm/``), ``hub`` (a hub dataset's schema, by name or local files), ``jsonl``
    (any JSON/JSONL/Parquet with ``columns``)."""
    path: Str | None = None
    """Directory (or file, for ``jsonl``) to read; for ``hub`` without a path the dataset is loaded by hub name."""
    columns: dict[Str, Str] = Field(default_factory=dict)
    """``jsonl`` only: source column of ``question``, ``choices``, ``answer`` (text, letter or index), ``id``, ``context``."""
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
    n_train: Int = Field(default=256, ge=1)
    """Training questions to generate (``synthetic`` only)."""
    n_valid: Int = Field(default=64, ge=1)
    """Validation questions to generate (``synthetic`` only)."""
    n_test: Int = Field(default=64, ge=1)
    """Test questions to generate (``synthetic`` only)."""
    min_choices: Int = Field(default=2, ge=2, le=5)
    """Fewest answer options per question (``synthetic`` only)."""
    max_choices: Int = Field(default=5, ge=2, le=5)
    """Most answer options per question (``synthetic`` only)."""
    seed: Int = 0
    """Seed of the dataset generator."""


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
    replicas: Int = Field(default=1, ge=1)
    """Actor replicas, each loading its own copy of the model."""
    num_gpus: Float = Field(default=0.0, ge=0)
    """GPUs per replica."""
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
    """Weights dtype; ``auto`` = bfloat16 on GPU, float32 on CPU."""
    max_model_len: Int | None = Field(default=None, ge=16)
    """Context length (prompt + rationale) in tokens; default: the model's. Prompts that do not fit with
    ``max_new_tokens`` drop examples first, then are rejected (``prompt_too_long``)."""
    chat_template: Literal["auto", "off"] = "auto"
    """``auto``: wrap the prompt in the tokenizer's chat template when it has one; ``off``: raw text."""
    min_rationale_words: Int = Field(default=3, ge=1)
    """Rationales with fewer words are rejected (``too_short``)."""
    gpu_memory_utilization: Float | None = Field(default=None, gt=0, le=1)
    """``vllm``: share of GPU memory for weights and KV cache (on CPU: of host memory); default 0.9 on
    GPU, 0.2 on CPU."""
    enforce_eager: Bool | None = None
    """``vllm``: skip graph capture/compilation (faster start, slower decoding); default: on CPU only."""
    trust_remote_code: Bool = False
    """Allow the model repo's own Python code (off unless you trust the model)."""


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


@dataclass(config=_STRICT)
class TrainConfig:
    """Ray Train fine-tuning of the student on the multi-task loss."""

    gamma: Float = Field(default=1.0, ge=0)
    """Weight of the answer-prediction loss."""
    alpha: dict[Str, Float] = Field(default_factory=dict)
    """Weight of each teacher's rationale loss, by teacher name; teachers not listed get 1.0."""
    epochs: Int = Field(default=1, ge=1)
    """Passes over the training questions."""
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
    epoch; the faster one, see README Benchmarks), ``global`` = ``random_shuffle`` of the whole dataset every
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


@dataclass(config=_STRICT)
class RayConfig:
    """How the driver reaches Ray."""

    address: Str | None = None
    """``None``: the cluster of ``ray job submit``/``RAY_ADDRESS``/``ray start`` if any, else a new local one."""
    num_cpus: Int | None = Field(default=None, ge=1)
    """CPUs of a new local cluster (default: all)."""


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
    (its Train workers plus one CPU for its Ray Data tokenisation), at least 1."""
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
    """Build the tiny local random-weight models into this directory first (smoke runs, quickstart)."""
    tune: TuneConfig | None = None
    """A Ray Tune sweep of the loss weights instead of one training run (``None``: no sweep)."""

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


_ADAPTER = TypeAdapter(Config)


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a ``Config`` from plain data, raising ``ConfigError`` that names every bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as err:
        lines = [f"{source}: invalid configuration:"]
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"]) or "(top level)"
            got = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
            msg = "unknown key" if e["type"] in ("extra_forbidden", "unexpected_keyword_argument") else e["msg"]
            lines.append(f"  {key}: {msg}{got}")
        raise ConfigError("\n".join(lines)) from None


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML (``3``, ``true``, ``[1]``)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.epochs=3")
    key, _, text = assignment.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: malformed key {key!r}")
    try:
        value = parse_yaml(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value is not valid YAML: {err}") from None
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, ".".join(parts[: i + 1]))]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is a {type(node).__name__}, not a section")
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])} is not a section")


def _list_index(items: list, part: str, where: str) -> int:
    if not re.fullmatch(r"\d+", part) or int(part) >= len(items):
        raise ConfigError(f"--set: {where}: expected an index below {len(items)}")
    return int(part)


def read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as plain data, with ``extends: other.yaml`` (relative to the file) merged under it:
    mappings merge key by key, anything else (lists included) is replaced by the extending file."""
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}" + (f" (extended by {chain[-1]})" if chain else "")) from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected a file name, got {base!r}")
    parent = (path.parent / base).resolve()
    if parent in chain or parent == path.resolve():
        raise ConfigError(f"{path}: extends: {base} extends itself (cycle)")
    return _merge(read_yaml(parent, (*chain, path.resolve())), raw)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: str | os.PathLike, overrides: list[str] = (), check_paths: bool = True) -> Config:
    """Read a YAML config, apply ``--set`` overrides, check types and cross-field rules.

    ``check_paths=False`` leaves model directories unchecked (``pipeline.prepare`` checks them after
    building the tiny models a config may ask for).
    """
    path = Path(path)
    raw = read_yaml(path)
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        apply_override(raw, assignment)
    config = from_dict(raw, source=str(path))
    validate(config, source=str(path), check_paths=check_paths)
    return config


def is_local_model(model: str) -> bool:
    """A model reference is a local directory if it looks like a path or exists on disk; else a hub id."""
    return model.startswith(("/", ".", "~")) or Path(model).expanduser().exists()


def with_absolute_paths(config: Config) -> Config:
    """A copy whose local model directories, output dir and tiny-models dir are absolute.

    Ray workers do not share the driver's working directory (Ray Train runs them elsewhere), so
    relative paths are resolved once, in the driver.
    """

    def absolute(path: str) -> str:
        return str(Path(path).expanduser().resolve())

    def model(ref: str) -> str:
        return absolute(ref) if is_local_model(ref) else ref

    return dataclasses.replace(
        config,
        student=dataclasses.replace(config.student, model=model(config.student.model)),
        teachers=[dataclasses.replace(t, model=model(t.model)) for t in config.teachers],
        output=dataclasses.replace(config.output, dir=absolute(config.output.dir)),
        tiny_models=absolute(config.tiny_models) if config.tiny_models else None,
    )


def _teacher_engine_errors(teachers: list[TeacherConfig], check_paths: bool) -> list[str]:
    errors = []
    for i, t in enumerate(teachers):
        if t.engine == "vllm" and t.num_gpus > 1 and not float(t.num_gpus).is_integer():
            errors.append(f"teachers.{i}.num_gpus: vllm shards a model over whole GPUs (tensor parallel); "
                          f"got {t.num_gpus}")
        if t.shots_mode == "generated" and t.shots and t.shot_pool <= t.shots:
            errors.append(f"teachers.{i}.shot_pool: {t.shot_pool} pool questions cannot give {t.shots} examples "
                          f"other than the question itself; use more than {t.shots}")
        if t.max_model_len is not None and t.max_model_len <= t.max_new_tokens:
            errors.append(f"teachers.{i}.max_model_len: {t.max_model_len} leaves no room for a prompt next to "
                          f"max_new_tokens {t.max_new_tokens}")
        local = Path(t.model).expanduser() / "config.json"
        if t.engine == "vllm" and check_paths and is_local_model(t.model) and local.is_file():
            try:
                encoder_decoder = json.loads(local.read_text()).get("is_encoder_decoder")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                encoder_decoder = False  # reported with the model paths below
            if encoder_decoder:
                errors.append(f"teachers.{i}.engine: vLLM does not serve encoder-decoder models such as "
                              f"{t.model!r}; use engine: hf")
    return errors


def validate(config: Config, source: str = "config", check_paths: bool = True) -> None:
    """Rules that span fields. Raises one ``ConfigError`` listing every problem."""
    errors: list[str] = []
    names = [t.name for t in config.teachers]
    for i, name in enumerate(names):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            errors.append(f"teachers.{i}.name: {name!r} must be letters, digits, '.', '_' or '-'")
        if name == "answer":
            errors.append(f"teachers.{i}.name: 'answer' is reserved for the answer task")
        if names.count(name) > 1 and names.index(name) == i:
            errors.append(f"teachers.{i}.name: {name!r} is used by more than one teacher")
    errors += _teacher_engine_errors(config.teachers, check_paths)
    imported = [n for n in config.teacher_names() if n not in names]
    for i, name in enumerate(names):
        if name in imported:
            errors.append(f"teachers.{i}.name: {name!r} is the name of a precomputed teacher")
    if config.data.rationales == "precomputed" and config.data.format not in (None, "official", "synthetic"):
        errors.append(f"data.rationales: precomputed rationales come with the official or synthetic format, "
                      f"not {config.data.format!r}")
    if config.data.columns and config.data.format not in (None, "jsonl"):
        errors.append("data.columns: a column mapping is for the jsonl format")
    names = config.teacher_names()
    for key, weight in config.train.alpha.items():
        if not names:
            errors.append(f"train.alpha.{key}: rationale weights are set but there are no teachers")
        elif key not in names:
            errors.append(f"train.alpha.{key}: no teacher named {key!r} (teachers: {', '.join(names)})")
        if weight < 0:
            errors.append(f"train.alpha.{key}: weight must be >= 0, got {weight}")
    if all(w == 0 for w in config.task_weights().values()):
        errors.append("train.gamma / train.alpha: all loss weights are zero; nothing would be learned")
    if config.data.min_choices > config.data.max_choices:
        errors.append(
            f"data.min_choices: {config.data.min_choices} is above data.max_choices {config.data.max_choices}"
        )
    if check_paths:
        models = [("student.model", config.student.model)]
        models += [(f"teachers.{i}.model", t.model) for i, t in enumerate(config.teachers)]
        for key, model in models:
            if is_local_model(model):
                where = Path(model).expanduser()
                if not (where / "config.json").is_file():
                    why = "does not exist" if not where.exists() else "has no config.json"
                    errors.append(f"{key}: model directory {model!r} {why}")
        student_dir = Path(config.student.model).expanduser()
        if is_local_model(config.student.model) and (student_dir / "config.json").is_file():
            try:
                encoder_decoder = json.loads((student_dir / "config.json").read_text()).get("is_encoder_decoder")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                errors.append(f"student.model: {student_dir / 'config.json'} is not a readable model config")
            else:
                if not encoder_decoder and config.train.mode == "one_encoder":
                    errors.append(f"train.mode: one_encoder decodes every task from one encoder pass and needs an "
                                  f"encoder-decoder student; {config.student.model!r} is a causal LM (use prefix)")
    if config.train.strategy == "fsdp" and not config.train.use_gpu:
        errors.append("train.strategy: fsdp shards the student over GPUs and needs train.use_gpu: true "
                      "(use ddp on CPU)")
    if config.tune is not None:
        errors += tune_errors(config)
    if config.train.length_bucketing == 1:
        errors.append("train.length_bucketing: 1 batch per window sorts nothing; use 0 (off) or 2 or more")
    if errors:
        raise ConfigError(f"{source}: invalid configuration:\n" + "\n".join(f"  {e}" for e in errors))


def _sweep_value_errors(key: str, values: Any, search: str, positive: bool = False) -> list[str]:
    if values is None:
        return []
    if isinstance(values, list):
        errors = [] if values else [f"{key}: an empty list sweeps nothing; give at least one value"]
        errors += [f"{key}: values must be {'> 0' if positive else '>= 0'}, got {v}"
                   for v in values if v < 0 or (positive and v == 0)]
        return errors
    errors = []
    if search == "grid":
        errors.append(f"{key}: a range needs tune.search random or optuna; grid search takes a list of values")
    if values.low >= values.high:
        errors.append(f"{key}: low {values.low} must be below high {values.high}")
    if (values.log or positive) and values.low <= 0:
        errors.append(f"{key}: low must be above 0 ({'log scale' if values.log else 'a learning rate'}), "
                      f"got {values.low}")
    return errors


def tune_errors(config: Config) -> list[str]:
    """The ``tune`` section's cross-field rules (``validate`` reports them with the rest)."""
    t, errors = config.tune, []
    names = config.teacher_names()
    errors += _sweep_value_errors("tune.gamma", t.gamma, t.search)
    errors += _sweep_value_errors("tune.lr", t.lr, t.search, positive=True)
    for name, values in t.alpha.items():
        if name not in names:
            errors.append(f"tune.alpha.{name}: no teacher named {name!r} "
                          f"(teachers: {', '.join(names) or 'none'})")
        errors += _sweep_value_errors(f"tune.alpha.{name}", values, t.search)
    if t.gamma is None and not t.alpha and t.lr is None and not t.leave_one_teacher_out:
        errors.append("tune: nothing to sweep; give tune.gamma, tune.alpha.<teacher>, tune.lr or "
                      "tune.leave_one_teacher_out: true (or remove the tune section)")
    if t.leave_one_teacher_out and not names:
        errors.append("tune.leave_one_teacher_out: there are no teachers to leave out")
    if t.search == "optuna" and t.leave_one_teacher_out:
        errors.append("tune.leave_one_teacher_out: not with optuna search (Optuna's trials take values from its own "
                      "space only); use grid or random search")
    if t.search == "optuna":
        import importlib.util

        if importlib.util.find_spec("optuna") is None:
            errors.append("tune.search: optuna is not installed (pip install optuna), or use grid or random")
    if t.search in ("random", "optuna") and t.gamma is None and not t.alpha and t.lr is None:
        errors.append(f"tune.search: {t.search} search needs a swept value (tune.gamma, tune.alpha or tune.lr)")
    return errors


def validate_against_data(config: Config, n_train: int, source: str = "config") -> None:
    """Rules that need the loaded data: every prompt's shots come from *other* training questions."""
    errors = [
        f"teachers.{i}.shots: {t.shots} in-context examples need more than the {n_train} training questions"
        for i, t in enumerate(config.teachers)
        if t.shots >= n_train
    ]
    if errors:
        raise ConfigError(f"{source}: invalid configuration:\n" + "\n".join(f"  {e}" for e in errors))


def stage_key(*parts: Any) -> str:
    """A short stable hash of config parts (dataclasses or plain data), to key cached stages."""
    plain = [dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
