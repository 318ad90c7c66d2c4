"""What the run's stages return: typed results, read from the figures a stage stores with its output.

A finished stage keeps its figures in its marker (``markers.MARKER``, or the teacher store's); a re-run reads them
back instead of running it. Markers written by earlier versions may lack a figure (``None`` here) or hold ones
no longer reported (left out), so ``of`` takes what it knows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def _known(cls: type, figures: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in figures.items() if k in names}


@dataclasses.dataclass(frozen=True)
class TeacherResult:
    """One teacher's rationales (and, when it answered valid and test itself, its own accuracy); the report's
    ``teachers`` entries, in this field order."""

    name: str
    model: str
    rationales: int | None = None
    rejected: int | None = None
    rejected_by_reason: dict[str, int] | None = None
    acceptance_rate: float | None = None
    median_words: float | None = None
    ended_by_eos: int | None = None
    ended_by_limit: int | None = None
    quarantined: int | None = None
    tokens_generated: int | None = None
    generated_now: int | None = None
    seconds: float | None = None
    evaluated: bool | None = None
    valid_accuracy: float | None = None
    test_accuracy: float | None = None
    unparsed: dict[str, int] | None = None
    too_long: dict[str, int] | None = None
    not_evaluated_because: str | None = None

    @classmethod
    def of(cls, name: str, model: str, figures: Mapping[str, Any]) -> TeacherResult:
        return cls(**{**_known(cls, figures), "name": name, "model": model})

    def line(self) -> str:
        """The console's line for it."""
        own = f", own valid accuracy {self.valid_accuracy:.3f}" if self.valid_accuracy is not None else ""
        return f"teacher {self.name}: {self.rationales or 0:,} rationales, {self.rejected or 0:,} rejected{own}"


@dataclasses.dataclass(frozen=True)
class StudentResult:
    """The exported student (or the sweep's best trial): its training and selection figures, as its export's
    marker holds them. ``loss_weights``, ``lr`` and ``tune`` only for a sweep. ``arms``: when baselines trained
    in the same run, that run's result for them (``compare.Baselines`` exports them); never stored."""

    key: str | None = None
    steps: int | None = None
    seconds: float | None = None
    final_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    best_step: int | None = None
    best_valid_accuracy: float | None = None
    checkpoint: str | None = None
    truncated: dict[str, Any] | None = None
    loss_weights: dict[str, float] | None = None
    lr: float | None = None
    tune: dict[str, Any] | None = None
    arms: dict[str, Any] | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def of(cls, figures: Mapping[str, Any], arms: dict[str, Any] | None = None) -> StudentResult:
        known = _known(cls, figures)
        known.pop("arms", None)
        return cls(**{**known, "final_metrics": known.get("final_metrics") or {}}, arms=arms)

    def marker(self) -> dict[str, Any]:
        """The figures the student's export keeps in its marker (a sweep's export writes its own, with
        ``loss_weights``, ``lr`` and ``tune``: ``sweep.run_sweep``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("arms", "loss_weights", "lr", "tune")}

    def line(self, seconds: float) -> str:
        """The console's line for it; ``seconds``: the training's wall time in this run."""
        best = "n/a" if self.best_valid_accuracy is None else f"{self.best_valid_accuracy:.3f}"
        return f"student: {self.steps} steps, best valid accuracy {best} at step {self.best_step} ({seconds:.0f} s)"
