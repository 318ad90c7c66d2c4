"""The comparison behind TinyLLM's claim (``compare: true``): the student beside its baselines.

The run's student learns the answers and every teacher's rationales (TinyLLM). With ``compare`` on, the same
student is also trained, with the same budget (steps, batch, learning rate) and the same selection on valid,

- **label-only**: answers only (every rationale weight 0): plain fine-tuning;
- **only-<teacher>**: answers and that one teacher's rationales (distilling step-by-step), per teacher when
  there are two or more (with one teacher it is the run's student itself).

The baselines train in the student's own Ray Train run, as more *arms* on the same micro-batches
(``student/arms.py``): one worker group instead of one per baseline, and a controlled comparison. Each
baseline is a cached stage of its own: its best checkpoint on valid is scored once on valid and test (both
scorers, in the student's evaluation pass) and exported to ``<run>/compare/<name>/student/`` with the
scores in its marker, so a re-run reuses it (``Baselines.of`` finds the finished ones through ``workflow.baseline_stages``).
The table of ``rows`` puts the
teachers' own accuracy, the baselines and the multi-teacher student side by side, shaped like the paper's.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from tinyllm_ray import markers, runs
from tinyllm_ray.config import Config

log = logging.getLogger("tinyllm_ray.compare")

LABEL_ONLY = "label-only"
COMPARE_DIR = "compare"


def variants(config: Config) -> dict[str, Config]:
    """The baseline configs by name: label-only, then each teacher alone (when there are several)."""
    names = config.teacher_names()

    def keep(kept: set[str]) -> Config:
        alpha = {n: (config.alpha_of(n) if n in kept else 0.0) for n in names}
        return dataclasses.replace(config, train=dataclasses.replace(config.train, alpha=alpha))

    out = {LABEL_ONLY: keep(set())}
    if len(names) > 1:
        out.update({f"only-{n}": keep({n}) for n in names})
    return out


@dataclasses.dataclass
class Baselines:
    """The run's baselines: the finished ones' figures (``reused``) and the others to train (``to_train``:
    name -> (config, stage key, export dir)), exported with their scores by ``finish``."""

    config: Config
    reused: dict[str, dict[str, Any]]
    to_train: dict[str, tuple[Config, str, Path]]

    @classmethod
    def of(cls, config: Config, run_dir: Path, stages_by_name: dict[str, tuple[Config, Any]]) -> Baselines:
        """Reuse the finished baselines, list the others to train. ``stages_by_name``: each baseline's config and
        stage (``workflow.baseline_stages``: its key, export directory and whether it finished)."""
        reused: dict[str, dict[str, Any]] = {}
        to_train: dict[str, tuple[Config, str, Path]] = {}
        for name, (variant, stage) in stages_by_name.items():
            export_dir = stage.where(run_dir)
            if info := stage.finished(run_dir):
                log.info("compare: reusing the %s baseline in %s", name, export_dir)
                reused[name] = info
                continue
            markers.check_replaceable(export_dir, f"{name} baseline")  # refused now, not after training
            log.info("compare: training the %s baseline (%s)", name, ", ".join(
                f"{t}={w:g}" for t, w in variant.task_weights().items()))
            to_train[name] = (variant, stage.key, export_dir)
        return cls(config, reused, to_train)

    def arms(self) -> dict[str, Config]:
        """The baselines still to train, by name: the arms the student's run trains beside it."""
        return {name: variant for name, (variant, _, _) in self.to_train.items()}

    def checkpoints(self, trained: dict[str, Any] | None) -> dict[str, str]:
        """Each trained baseline's best checkpoint on valid, by name, from the student's run (``trained``)."""
        return {name: trained["arms"][name]["checkpoint"] for name in self.to_train} if trained else {}

    def finish(self, trained: dict[str, Any] | None, accuracy: dict[str, dict[str, float]]
               ) -> dict[str, dict[str, Any]]:
        """Export each trained baseline's best checkpoint with its scores (``accuracy``, by name); every
        baseline's figures by name, in ``variants`` order."""
        out = dict(self.reused)
        for name, (variant, key, export_dir) in self.to_train.items():
            arm = trained["arms"][name]
            info = {"key": key, "name": name, "loss_weights": variant.task_weights(), "steps": trained["steps"],
                    "seconds": trained["seconds"], "best_step": arm["best_metrics"].get("step"),
                    **_accuracies(accuracy[name])}
            export_dir.parent.mkdir(parents=True, exist_ok=True)
            markers.export_checkpoint(arm["checkpoint"], export_dir, info, runs.ACCESS_MODES[self.config.output.access])
            log.info("compare: %s: valid %s, test %s", name, _fmt(info["valid_accuracy"]),
                     _fmt(info["test_accuracy"]))
            out[name] = info
        return {name: out[name] for name in variants(self.config)}


def _accuracies(accuracy: dict[str, float]) -> dict[str, float | None]:
    return {"valid_accuracy": accuracy.get("valid"), "test_accuracy": accuracy.get("test"),
            "valid_accuracy_rank": accuracy.get("rank_valid"), "test_accuracy_rank": accuracy.get("rank_test")}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparison table of a report: each teacher's own accuracy, the baselines, then the multi-teacher
    student (TinyLLM). A row: ``row, kind, valid_accuracy, test_accuracy, valid_accuracy_rank,
    test_accuracy_rank, steps, seconds`` (None where it does not apply)."""
    empty = {"valid_accuracy_rank": None, "test_accuracy_rank": None, "steps": None}
    out = []
    for t in report["teachers"]:
        out.append({"row": f"teacher {t['name']} (answers by itself)", "kind": "teacher", **empty,
                    "valid_accuracy": t.get("valid_accuracy"), "test_accuracy": t.get("test_accuracy"),
                    "seconds": t.get("seconds"), "note": t.get("not_evaluated_because")})
    for name, b in (report.get("baselines") or {}).items():
        label = "student, label-only" if name == LABEL_ONLY else f"student, {name.removeprefix('only-')} alone"
        out.append({"row": label, "kind": "baseline", "steps": b["steps"], "seconds": b["seconds"],
                    **{k: b.get(k) for k in ("valid_accuracy", "test_accuracy", "valid_accuracy_rank",
                                             "test_accuracy_rank")}})
    s = report["student"]
    teachers = "all teachers" if len(report["teachers"]) > 1 else "its teacher"
    out.append({"row": f"student, {teachers} (TinyLLM)", "kind": "student", "steps": s["steps"],
                "seconds": s["seconds"], **{k: s.get(k) for k in ("valid_accuracy", "test_accuracy",
                                                                  "valid_accuracy_rank", "test_accuracy_rank")}})
    return out
