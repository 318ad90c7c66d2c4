"""The configuration rules that span fields, and the checks of the model directories it names.

``validate(config)`` raises one ``ConfigError`` listing every problem; ``validate_against_data`` adds
the rules that need the loaded dataset. Field types are checked earlier, when the config is parsed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tinyllm_ray import model_files
from tinyllm_ray.config.schema import Config, ConfigError, TeacherConfig
from tinyllm_ray.input_checks import clip


def is_local_model(model: str) -> bool:
    """A model reference is a local directory if it looks like a path or exists on disk; else a hub id."""
    return model.startswith(("/", ".", "~")) or Path(model).expanduser().exists()


# A Hugging Face hub id: ``name`` or ``owner/name`` of letters, digits, '-', '_' and '.' (huggingface_hub's
# ``validate_repo_id`` rule, without importing it here), at most 96 characters.
HUB_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")


def hub_id_problem(key: str, model: str) -> str | None:
    """Why ``model`` (neither a local directory nor a model file) cannot be a hub id, or None."""
    if HUB_ID.fullmatch(model) and len(model) <= 96 and "--" not in model and ".." not in model \
            and not model.endswith((".", "-")):
        return None
    return (f"{key}: {clip(model)} is neither a local model directory (a path starting with '/', '.' or '~') nor a "
            f"Hugging Face hub id ('owner/name' of letters, digits, '-', '_', '.')")


# Model types whose activations overflow float16 (FLAN-T5 among them).
T5_MODEL_TYPES = ("t5", "mt5", "umt5", "longt5")


def is_t5_family(model_config: dict) -> bool:
    """Whether a model's ``config.json`` (as a dict) describes a T5-family model: a T5 model type, or an
    encoder-decoder whose architecture is built of T5 layers (e.g. ``T5ForConditionalGeneration``)."""
    if model_config.get("model_type") in T5_MODEL_TYPES:
        return True
    architectures = model_config.get("architectures") or []
    return bool(model_config.get("is_encoder_decoder")) and any("T5" in str(a) for a in architectures)


def _read_model_config(model: str) -> dict | None:
    """A local model directory's ``config.json`` as a dict; None for a hub id or an unreadable file (the
    latter is reported with the model paths)."""
    path = Path(model).expanduser() / "config.json"
    if not (is_local_model(model) and path.is_file()):
        return None
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return raw if isinstance(raw, dict) else None


def _has_chat_template(folder: Path) -> bool:
    """Whether a model folder's tokenizer has a chat template (its own file, or a key of tokenizer_config.json)."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


def _teacher_engine_errors(teachers: list[TeacherConfig]) -> list[str]:
    errors = []
    for i, t in enumerate(teachers):
        if t.num_gpus > 1 and not float(t.num_gpus).is_integer():
            errors.append(f"teachers.{i}.num_gpus: a replica spreads its model over whole GPUs (vllm: tensor "
                          f"parallel; hf: its layers); got {t.num_gpus}")
        if t.engine == "vllm" and 0 < t.num_gpus < 1 and (t.gpu_memory_utilization or 0) > t.num_gpus:
            errors.append(f"teachers.{i}.gpu_memory_utilization: {t.gpu_memory_utilization} of the GPU's memory "
                          f"is more than this replica's share of it (num_gpus {t.num_gpus}); use at most "
                          f"{t.num_gpus}")
        if t.shots_mode == "generated" and t.shots and t.shot_pool <= t.shots:
            errors.append(f"teachers.{i}.shot_pool: {t.shot_pool} pool questions cannot give {t.shots} examples "
                          f"other than the question itself; use more than {t.shots}")
        if t.max_model_len is not None and t.max_model_len <= t.max_new_tokens:
            errors.append(f"teachers.{i}.max_model_len: {t.max_model_len} leaves no room for a prompt next to "
                          f"max_new_tokens {t.max_new_tokens}")
    return errors


def _teacher_model_errors(teachers: list[TeacherConfig]) -> list[str]:
    """What a teacher's local model folder says against its settings (its ``config.json``, its tokenizer)."""
    errors = []
    for i, t in enumerate(teachers):
        model_config = _read_model_config(t.model)
        if model_config is None:
            continue
        if t.engine == "vllm" and model_config.get("is_encoder_decoder"):
            errors.append(f"teachers.{i}.engine: vLLM does not serve encoder-decoder models such as "
                          f"{t.model!r}; use engine: hf")
        if t.chat_template == "on" and not _has_chat_template(Path(t.model).expanduser()):
            errors.append(f"teachers.{i}.chat_template: on, but the tokenizer of {t.model!r} has no chat template; "
                          f"use auto or off")
        if t.dtype == "float16" and is_t5_family(model_config):
            errors.append(f"teachers.{i}.dtype: {t.model!r} is a T5-family model, whose activations overflow "
                          f"float16 (NaN/inf); use bfloat16, float32 or auto")
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
    errors += _teacher_engine_errors(config.teachers)
    for i, t in enumerate(config.teachers):
        request = t.prompt.explain_request if t.prompt else None
        if request is not None:
            try:
                request.format(answer="(a) x")
                ok = "{answer}" in request
            except (KeyError, IndexError, ValueError):
                ok = False
            if not ok:
                errors.append(f"teachers.{i}.prompt.explain_request: must name the gold answer as {{answer}} and "
                              f"have no other {{...}} field, got {clip(request)}")
        for field in ("instruction", "rationale_lead", "answer_label", "answer_instruction"):
            value = getattr(t.prompt, field, None) if t.prompt else None
            if value is not None and not value.strip():
                errors.append(f"teachers.{i}.prompt.{field}: empty; leave the key out to keep the default text")
    errors += _student_prefix_errors(config)
    imported = [n for n in config.teacher_names() if n not in names]
    for i, name in enumerate(names):
        if name in imported:
            errors.append(f"teachers.{i}.name: {name!r} is the name of a precomputed teacher")
    if config.data.rationales == "precomputed" and config.data.format not in (None, "official", "synthetic"):
        errors.append(f"data.rationales: precomputed rationales come with the official or synthetic format, "
                      f"not {config.data.format!r}")
    if config.data.columns and config.data.format not in (None, "jsonl"):
        errors.append("data.columns: a column mapping is for the jsonl format")
    if config.data.scorer and config.data.task == "choice":
        errors.append(f"data.scorer: {config.data.scorer!r} scores open answers; data.task is choice (its answers "
                      f"are matched to the options)")
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
    if config.compare and config.tune is not None:
        errors.append("compare: the baselines are trained with the train section's weights, not in a sweep; "
                      "set tune: null (or put the sweep's best weights in train.alpha first)")
    if config.compare and not names:
        errors.append("compare: there is nothing to compare without teachers (the run is already label-only)")
    if config.compare and config.train.gamma == 0:
        errors.append("compare: train.gamma is 0, so the label-only baseline would learn nothing")
    if config.data.min_choices > config.data.max_choices:
        errors.append(
            f"data.min_choices: {config.data.min_choices} is above data.max_choices {config.data.max_choices}"
        )
    models = [("student.model", config.student.model)]
    models += [(f"teachers.{i}.model", t.model) for i, t in enumerate(config.teachers)]
    for key, model in models:
        if not model_files.is_model_file(model) and not is_local_model(model):
            if (why := hub_id_problem(key, model)) is not None:
                errors.append(why)
    if check_paths:
        errors += _model_errors(config)
    if config.train.strategy == "fsdp" and not config.train.use_gpu:
        errors.append("train.strategy: fsdp shards the student over GPUs and needs train.use_gpu: true "
                      "(use ddp on CPU)")
    if config.tune is not None:
        errors += tune_errors(config)
    errors += tracking_errors(config)
    if config.train.compile != "off" and config.train.strategy == "fsdp":
        errors.append("train.compile: not with train.strategy fsdp (compiling FSDP's units is not supported here); "
                      "use strategy ddp or compile: off")
    if config.train.length_bucketing == 1:
        errors.append("train.length_bucketing: 1 batch per window sorts nothing; use 0 (off) or 2 or more")
    if errors:
        raise ConfigError(f"{source}: invalid configuration:\n" + "\n".join(f"  {e}" for e in errors))


def validate_models(config: Config, source: str = "config") -> None:
    """The checks of ``validate`` that read the models' folders and files (``validate(check_paths=False)`` leaves
    them out): for a run that checks its rules first and its models once they exist (tiny models are built
    between the two). Raises one ``ConfigError`` listing every problem."""
    if errors := _model_errors(config):
        raise ConfigError(f"{source}: invalid configuration:\n" + "\n".join(f"  {e}" for e in errors))


def _model_errors(config: Config) -> list[str]:
    """Model references that do not resolve (a missing folder, a GGUF file or package that cannot be had), and what
    the models' own files say against the config."""
    errors: list[str] = []
    models = [("student.model", config.student.model)]
    models += [(f"teachers.{i}.model", t.model) for i, t in enumerate(config.teachers)]
    for key, model in models:
        if model_files.is_model_file(model):  # a GGUF file or package: converted when the run starts
            if (why := model_files.problem(model, key)) is not None:
                errors.append(why)
        elif is_local_model(model):
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
    return errors + _teacher_model_errors(config.teachers)


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


def tracking_errors(config: Config) -> list[str]:
    """The ``tracking`` section's rules: the packages it needs are installed (checked here, before Ray starts,
    not in a Train worker minutes later)."""
    import importlib.util

    errors = []
    if config.tracking.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        errors.append("tracking.tensorboard: tensorboardX is not installed (pip install tensorboardX), or set "
                      "tracking.tensorboard: false")
    if config.tracking.mlflow is not None and importlib.util.find_spec("mlflow") is None:
        errors.append("tracking.mlflow: MLflow is not installed; pip install 'tinyllm-ray[tracking]' (or pip "
                      "install mlflow-skinny), or remove tracking.mlflow")
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




def _student_prefix_errors(config: Config) -> list[str]:
    """The student's task prefixes: the answer's not empty, the rationales' with ``{teacher}`` (one prefix per
    teacher) and no other field, all of them different (a shared prefix would make two tasks one)."""
    s = config.student
    errors = []
    if not s.answer_prefix.strip():
        errors.append("student.answer_prefix: empty; leave the key out to keep the default 'predict: '")
    try:
        ok = "{teacher}" in s.rationale_prefix and bool(s.rationale_prefix.format(teacher="t").strip())
    except (KeyError, IndexError, ValueError):
        ok = False
    if not ok:
        errors.append(f"student.rationale_prefix: must name the teacher as {{teacher}} and have no other {{...}} "
                      f"field, got {clip(s.rationale_prefix)}")
    elif s.answer_prefix in {s.rationale_prefix.format(teacher=n) for n in config.teacher_names()}:
        errors.append(f"student.answer_prefix: {clip(s.answer_prefix)} is also a teacher's rationale prefix")
    return errors
