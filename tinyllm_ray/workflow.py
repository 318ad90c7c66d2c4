"""The run's stages under one contract: what each is called, its key, where its result lives, and whether it is
already there. The run (``pipeline``) and the dry run (``plan``) both ask these objects, so what a resume reuses
and what the dry run says it will reuse come from one place.

Every stage is a frozen dataclass with

- ``name``: how messages name it;
- ``key``: its stage key (``keys.py``), which its stored result carries;
- ``where(run_dir)``: the directory its result goes to;
- ``finished(run_dir)``: the figures stored with its result when it finished with this key, else ``None``:
  ``TeacherStage`` (a teacher's rationale store) and ``ExportStage`` (a trained student's export).

The stages of a config, in run order: ``teacher_stages`` (the precomputed teachers, then the configured ones),
``student_stage`` (the student, or the loss-weight sweep that replaces it) and, with ``compare: true``,
``baseline_stages``. Running them stays with ``pipeline``: teachers run side by side and baselines train as arms
of the student's run, so no stage runs alone; what they return is typed (``results.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tinyllm_ray import compare, keys, markers, runs
from tinyllm_ray.config import Config, TeacherConfig
from tinyllm_ray.data.schema import Question
from tinyllm_ray.teachers import store


@dataclasses.dataclass(frozen=True)
class TeacherStage:
    """One teacher's rationale store (``teachers/store.py``, named ``store_name``): a configured teacher's
    rationales and its own answers to valid and test, or (``teacher`` None) the authors' precomputed rationales
    imported as a teacher, with no model run."""

    store_name: str
    key: str
    teacher: TeacherConfig | None = None

    @property
    def name(self) -> str:
        if self.teacher is None:
            return f"precomputed teacher {self.store_name!r}"
        return f"teacher {self.store_name!r} ({self.teacher.model})"

    def where(self, run_dir: Path) -> Path:
        return store.teacher_dir(run_dir, self.store_name)

    def finished(self, run_dir: Path) -> dict[str, Any] | None:
        return store.finished(run_dir, self.store_name, self.key)


@dataclasses.dataclass(frozen=True)
class ExportStage:
    """A trained student exported to ``<path>/student``: the run's student (``path`` empty), the sweep that
    replaces it, or a ``compare`` baseline (``path``: ``compare/<name>``)."""

    name: str
    key: str
    path: str = ""

    def where(self, run_dir: Path) -> Path:
        return run_dir / self.path / runs.EXPORT_DIR

    def finished(self, run_dir: Path) -> dict[str, Any] | None:
        return markers.finished(self.where(run_dir), self.key)


def teacher_stages(config: Config, train: Sequence[Question], held_out: Mapping[str, Sequence[Question]],
                   precomputed_files: Mapping[str, Any] | None = None,
                   precomputed: Sequence[str] = ()) -> list[TeacherStage]:
    """The precomputed teachers (``precomputed``: their names; ``precomputed_files``: the data files read), then
    the configured ones, whose keys are made in one pass over the questions."""
    answers = {s: qs for s, qs in held_out.items() if qs}
    made = keys.teacher_keys(config.teachers, train, answers) if config.teachers else {}
    return ([TeacherStage(name, keys.precomputed_key(config, name, precomputed_files)) for name in precomputed]
            + [TeacherStage(t.name, made[t.name], t) for t in config.teachers])


def student_stage(config: Config) -> ExportStage:
    """The student, or the loss-weight sweep that trains it (``tune``): both export to ``<run>/student``."""
    if config.tune is not None:
        return ExportStage("loss-weight sweep", keys.sweep_key(config))
    return ExportStage("student training", keys.student_key(config))


def baseline_stages(config: Config) -> dict[str, tuple[Config, ExportStage]]:
    """``compare: true``'s baselines by name: each one's config (its loss weights) and stage."""
    rationales = keys.rationales_key(config)
    return {name: (variant, ExportStage(f"{name} baseline", keys.baseline_key(variant, name, rationales),
                                        f"{compare.COMPARE_DIR}/{name}"))
            for name, variant in compare.variants(config).items()}
