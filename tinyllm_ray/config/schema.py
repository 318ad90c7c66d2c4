"""The run configuration's schema: nested, documented dataclasses, one per YAML section.

A run is described by one YAML file (see ``configs/quickstart.yaml``) whose sections map onto these
dataclasses. Every field's type is checked in strict mode (pydantic dataclasses, ``strict.py``): ``"3"`` is not
an int, ``1`` is not a bool, and no float may be NaN or infinite. This module holds the whole ``Config`` and the
``data``, ``teachers`` and ``student`` sections; ``training.py`` the ``train``, ``eval`` and ``tune`` sections,
``environment.py`` the ``output``, ``ray`` and ``tracking`` ones. Loading lives in ``loading.py``, the rules that
span fields in ``checks.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, Strict
from pydantic.dataclasses import dataclass

# MlflowConfig and RangeConfig stay importable here though unused: a sweep's saved state (Tune's pickles) names
# the section classes by this module, where they were declared before, and such a sweep must still resume.
from tinyllm_ray.config.environment import (
    MlflowConfig,  # noqa: F401
    OutputConfig,
    RayConfig,
    TrackingConfig,
)
from tinyllm_ray.config.strict import STRICT, Bool, Float, Int, Str
from tinyllm_ray.config.training import (
    EvalConfig,
    RangeConfig,  # noqa: F401
    TrainConfig,
    TuneConfig,
)

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


# The built-in dataset's largest split: it is generated in the driver before anything else runs, so a much larger
# n_train would hold the entry point for minutes.
SYNTHETIC_MAX = 100_000


@dataclass(config=STRICT)
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


@dataclass(config=STRICT)
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


@dataclass(config=STRICT)
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


@dataclass(config=STRICT)
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


@dataclass(config=STRICT)
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
