"""The comparison behind TinyLLM's claim (``compare: true``): the student beside its baselines.

The run's student learns the answers and every teacher's rationales (TinyLLM). With ``compare`` on, the same
student is also trained, with the same budget (steps, batch, learning rate) and the same selection on valid,

- **label-only**: answers only (every rationale weight 0): plain fine-tuning;
- **only-<teacher>**: answers and that one teacher's rationales (distilling step-by-step), per teacher when
  there are two or more (with one teacher it is the run's student itself).

Each baseline is a cached stage of its own: it is trained into ``<run>/compare/<name>/``, its best checkpoint
on valid is scored once on valid and test (both scorers), and the scores go into the export's marker
(``<run>/compare/<name>/student/_stage.json``), so a re-run reuses it. Baselines are Ray tasks started before
the run's own student trains (``start``), so they train side by side with it where the cluster has room, and
are collected after it (``Baselines.finish``). The table of ``rows`` puts the
teachers' own accuracy, the baselines and the multi-teacher student side by side, shaped like the paper's.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray

from tinyllm_ray import runs, stages
from tinyllm_ray.config import Config
from tinyllm_ray.data.schema import Question

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


def baseline_key(config: Config, name: str, rationale_key: str) -> str:
    """What a baseline's result depends on: the data, the rationales it reads, the student, its training
    settings and the selection on valid."""
    c = config
    selection = (c.eval.every_steps, c.eval.select_on, c.eval.max_valid)
    return stages.stage_key(name, c.data, rationale_key, c.student, c.train, selection)


@dataclasses.dataclass
class Baselines:
    """Baselines started by ``start``: the reused ones' figures, the running ones' Ray tasks."""

    config: Config
    reused: dict[str, dict[str, Any]]
    running: dict[str, tuple[ray.ObjectRef, str, Path, Config]]  # name -> (task, stage key, export dir, config)

    def finish(self) -> dict[str, dict[str, Any]]:
        """Wait for the running baselines, export each one's best checkpoint with its scores; every baseline's
        figures by name, in ``variants`` order."""
        out = dict(self.reused)
        for name, (task, key, export_dir, variant) in self.running.items():
            trained, accuracy = ray.get(task)
            best = trained["best_metrics"]
            info = {"key": key, "name": name, "loss_weights": variant.task_weights(), "steps": trained["steps"],
                    "seconds": trained["seconds"], "best_step": best.get("step"), **_accuracies(accuracy)}
            stages.export_checkpoint(trained["checkpoint"], export_dir, info,
                                     runs.ACCESS_MODES[self.config.output.access])
            log.info("compare: %s: valid %s, test %s", name, _fmt(info["valid_accuracy"]),
                     _fmt(info["test_accuracy"]))
            out[name] = info
        return {name: out[name] for name in variants(self.config)}


def start(config: Config, run_dir: Path, examples: pa.Table, splits: dict[str, list[Question]],
          rationale_key: str) -> Baselines:
    """Reuse the finished baselines and start the others, each as a Ray task that trains and scores it, so they
    run side by side (and beside the run's own student) as far as the cluster has CPUs or GPUs for their Train
    workers; ``Baselines.finish`` collects them.

    ``rationale_key`` identifies the teachers' rationales in ``examples`` (a baseline is redone when they
    change); ``splits``: the held-out questions (``valid`` selects the checkpoint; valid and test are scored).
    """
    from tinyllm_ray.student.batches import target_col
    from tinyllm_ray.student.train import student_layout, tokenized_dataset

    reused: dict[str, dict[str, Any]] = {}
    running: dict[str, tuple[ray.ObjectRef, str, Path, Config]] = {}
    tokenized = None  # tokenised once for every baseline that still has to train (all tasks; each uses its own)
    held_out = {s: splits[s] for s in ("valid", "test") if splits.get(s)}
    for name, variant in variants(config).items():
        where = run_dir / COMPARE_DIR / name
        export_dir = where / runs.EXPORT_DIR
        key = baseline_key(variant, name, rationale_key)
        if info := stages.finished(export_dir, key):
            log.info("compare: reusing the %s baseline in %s", name, export_dir)
            reused[name] = info
            continue
        if tokenized is None:
            tasks = [t for t in config.task_weights() if target_col(t) in examples.column_names]
            tokenized = tokenized_dataset(examples, config, tasks, student_layout(config))
        log.info("compare: training the %s baseline (%s)", name, ", ".join(
            f"{t}={w:g}" for t, w in variant.task_weights().items()))
        where.mkdir(parents=True, exist_ok=True)
        task = _train_and_score.remote(variant, where, examples, tokenized, splits.get("valid"), held_out)
        running[name] = (task, key, export_dir, variant)
    return Baselines(config, reused, running)


# The task only waits on its TorchTrainer and evaluation actors, which ask for the CPUs/GPUs themselves.
@ray.remote(num_cpus=0)
def _train_and_score(variant: Config, where: Path, examples: pa.Table, tokenized: Any,
                     valid: list[Question] | None, held_out: dict[str, list[Question]]
                     ) -> tuple[dict[str, Any], dict[str, float]]:
    from tinyllm_ray.student.evaluate import evaluate
    from tinyllm_ray.student.train import train_student

    trained = train_student(examples, variant, where, valid=valid, tokenized=tokenized)
    accuracy, _ = evaluate(held_out, trained["checkpoint"], variant)
    return trained, accuracy


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
