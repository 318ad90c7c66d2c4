"""Every stage's key, in one place: what a stage's stored result depends on, hashed (``markers.stage_key``).

A finished stage's marker holds its key; a run whose key matches reuses the result, so a key changes only when
what the stage would produce changes. Keys of results already stored must never change by accident:
``tests/unit/test_stage_keys.py`` pins them.

- ``teacher_key``: one configured teacher: its generation settings (``settings_key``), every training question,
  and the held-out questions it answers itself (only when evaluated);
- ``row_key``: one prompt row of a teacher (its settings, role and prompt variants): what resume looks up;
- ``precomputed_key``: the authors' rationales imported as a teacher;
- ``rationales_key``: what the rationales a student reads depend on;
- ``student_key``, ``baseline_key``, ``sweep_key``: the student (or its sweep) and each ``compare`` baseline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from tinyllm_ray import prompts
from tinyllm_ray.config import Config, TeacherConfig
from tinyllm_ray.data.load import no_cycle_collection
from tinyllm_ray.data.schema import Question
from tinyllm_ray.markers import stage_key

# The settings that decide what a teacher writes; replicas, GPUs and batch sizes only decide how fast.
GENERATION_FIELDS = ("model", "engine", "dtype", "temperature", "top_p", "seed", "max_new_tokens", "max_model_len",
                     "chat_template", "min_rationale_words", "shots", "shots_mode", "shot_pool",
                     "trust_remote_code")
# Teacher stores' keys are longer than the other stages' (they were so from the start).
_TEACHER_DIGITS = 24


def _hash(*parts: Any) -> str:
    return stage_key(*parts, digits=_TEACHER_DIGITS)


def settings_key(teacher: TeacherConfig) -> str:
    """A teacher's generation settings and prompt text (not its replicas, batch size or evaluation)."""
    settings: dict[str, Any] = {f: getattr(teacher, f) for f in GENERATION_FIELDS}
    text = prompts.TeacherText.of(teacher.prompt)
    if text != prompts.DEFAULT_TEXT:  # only then, so the keys of stores written with the default text stay
        settings["prompt"] = dataclasses.asdict(text)
    return _hash(prompts.TEACHER_TEMPLATE_VERSION, settings)


def row_key(settings: str, role: str, variants: list[str]) -> str:
    """One prompt row's key: its teacher's ``settings_key``, its role and its prompt variants."""
    return _hash(settings, role, variants)


def teacher_key(teacher: TeacherConfig, questions: Sequence[Question],
                answers: dict[str, Sequence[Question]] | None = None) -> str:
    """Identifies a complete teacher: its generation settings, every question it explains, and the questions
    it answers itself (none when it is not evaluated: its key is then what it was before evaluation existed).

    The same key as ``_hash(settings, [rows], [version, {split: [rows]}])``, whose JSON text is streamed into
    the hash a chunk of rows at a time (``_row_list_json``) rather than built whole: a million questions' text
    and row dicts at once take gigabytes."""
    return teacher_keys([teacher], questions, answers)[teacher.name]


def teacher_keys(teachers: Sequence[TeacherConfig], questions: Sequence[Question],
                 answers: dict[str, Sequence[Question]] | None = None) -> dict[str, str]:
    """``teacher_key`` of every teacher (by name) in one pass: the questions' JSON is written once and fed to
    each teacher's hash (a re-run of finished teachers is mostly this pass)."""
    with no_cycle_collection():  # a dict per question per chunk, no cycles: full collections made it superlinear
        return _teacher_keys(teachers, questions, answers)


def _teacher_keys(teachers: Sequence[TeacherConfig], questions: Sequence[Question],
                  answers: dict[str, Sequence[Question]] | None) -> dict[str, str]:
    digests = {t.name: hashlib.sha256() for t in teachers}

    def writer(names: Sequence[str]) -> Callable[[str], None]:
        def write(text: str) -> None:
            data = text.encode()  # json.dumps writes ASCII
            for name in names:
                digests[name].update(data)
        return write

    for t in teachers:
        writer([t.name])(f"[{_json(settings_key(t))}, ")
    everyone = writer(list(digests))
    _row_list_json(questions, everyone)
    evaluated = [t.name for t in teachers if t.evaluate and any(answers.values() if answers else ())]
    if evaluated:
        write = writer(evaluated)
        write(f", [{_json(prompts.ANSWER_TEMPLATE_VERSION)}, {{")
        for i, (split, qs) in enumerate(sorted(answers.items())):
            write(f"{', ' if i else ''}{_json(split)}: ")
            _row_list_json(qs, write)
        write("}]")
    everyone("]")
    return {name: digest.hexdigest()[:_TEACHER_DIGITS] for name, digest in digests.items()}


def _json(value: Any) -> str:
    """``value`` as ``markers.stage_key`` writes it into its JSON text."""
    return json.dumps(value, sort_keys=True, default=str)


def _row_list_json(questions: Sequence[Question], write: Callable[[str], None], chunk: int = 4096) -> None:
    """``_json([q.to_row() for q in questions])`` written in pieces: the JSON of a list is ``[`` + its items'
    JSON joined by ``", "`` + ``]`` (json.dumps' default separators), so chunks of items join into the same text."""
    write("[")
    for start in range(0, len(questions), chunk):
        text = _json([q.to_row() for q in questions[start:start + chunk]])
        write(f"{', ' if start else ''}{text[1:-1]}")
    write("]")


def precomputed_key(config: Config, teacher: str, files: Any) -> str:
    """The authors' rationales of ``teacher`` as the run imports them: the data section and the files read."""
    return stage_key(config.data, teacher, files)


def rationales_key(config: Config) -> str:
    """What the rationales a student reads depend on: the data (and so the precomputed teachers' files),
    each configured teacher's generation settings (not its replicas, batch size or evaluation) and the prompt
    template. Student stages key on this rather than on the whole teacher configs."""
    return stage_key(config.data, [settings_key(t) for t in config.teachers], prompts.TEACHER_TEMPLATE_VERSION)


def _selection(config: Config) -> tuple[Any, ...]:
    """What picks the exported checkpoint on valid."""
    return config.eval.every_steps, config.eval.select_on, config.eval.max_valid


def student_key(config: Config) -> str:
    """The student stage's key: the rationales it reads, the student, its training and the selection on valid."""
    return stage_key(rationales_key(config), config.student, config.train, _selection(config))


def baseline_key(config: Config, name: str, rationale_key: str) -> str:
    """What a ``compare`` baseline's result depends on (``config``: the baseline's own, with its loss weights):
    the data, the rationales it reads, the student, its training settings and the selection on valid."""
    return stage_key(name, config.data, rationale_key, config.student, config.train, _selection(config))


def sweep_key(config: Config) -> str:
    """The loss-weight sweep's key: the student's, and the ``tune`` section but for how many trials run at once
    (a resources setting, not a result)."""
    tune = dataclasses.replace(config.tune, max_concurrent_trials=None)
    return stage_key(rationales_key(config), config.student, config.train, _selection(config), tune)
