"""After the sweep: every trial collected from Tune's result grid with its best kept checkpoint, the best
trial, the ``tune`` section of ``report.json`` and the plot of valid accuracy against the weights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tinyllm_ray.config import Config
from tinyllm_ray.student.checkpoints import SCORE
from tinyllm_ray.student.worker import PLACEMENT_GROUP
from tinyllm_ray.sweep.space import point_of, swept_values
from tinyllm_ray.sweep.trial import TIME_ATTR, trial_dir

PLOT_FILE = "tune_valid_accuracy.png"


def _kept_checkpoints(train_dir: Path) -> list[dict[str, Any]]:
    """The complete checkpoints Ray Train kept for one trial, with their reported metrics."""
    found = []
    for metrics in sorted(train_dir.glob("student/checkpoint_step*/metrics.json")):
        if (metrics.parent / "config.json").is_file():
            found.append({**json.loads(metrics.read_text()), "path": str(metrics.parent)})
    return found


def collect_trials(grid: Any, config: Config, run_dir: Path, max_t: int) -> list[dict[str, Any]]:
    """One dict per trial: point, best valid accuracy, evaluations, steps, status, best kept checkpoint."""
    trials = []
    for result in grid:
        last = dict(result.metrics or {})
        named = re.search(r"([0-9a-f]{5}_\d{5})", Path(result.path).name) if result.path else None
        trial_id = last.get("trial_id") or (named.group(1) if named else None)
        frame = result.metrics_dataframe
        scores = [] if frame is None or SCORE not in frame else [float(v) for v in frame[SCORE].dropna()]
        evaluations = int(last.get(TIME_ATTR, 0) or 0)
        kept = _kept_checkpoints(trial_dir(run_dir, trial_id) / "train") if trial_id else []
        top = max(kept, key=lambda c: (c[SCORE], c["step"]), default=None)
        if result.error:
            status = "error"
        elif evaluations >= max_t:
            status = "completed"
        else:
            status = "stopped early"
        trials.append({
            "trial_id": trial_id,
            "point": point_of(result.config or {}),
            "valid_accuracy": max(scores) if scores else last.get(SCORE),
            "evaluations": evaluations,
            "steps": int(last.get("step", 0) or 0),
            "status": status,
            "error": str(result.error).strip().splitlines()[-1] if result.error else None,
            "checkpoint": top["path"] if top else None,
            "best_step": top["step"] if top else None,
            "checkpoint_valid_accuracy": top[SCORE] if top else None,
            "final_metrics": {k: v for k, v in last.items()
                              if isinstance(v, (int, float, str)) and k not in ("config", PLACEMENT_GROUP)},
        })
    return sorted(trials, key=lambda t: t["trial_id"] or "")


def best_trial(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial whose kept checkpoint scored best on valid (ties: the earlier trial)."""
    with_checkpoint = [t for t in trials if t["checkpoint"]]
    if not with_checkpoint:
        return None
    best = max(with_checkpoint, key=lambda t: t["checkpoint_valid_accuracy"])
    return {**best, "valid_accuracy": best["checkpoint_valid_accuracy"]}


def sweep_report(trials: list[dict[str, Any]], best: dict[str, Any], config: Config, max_t: int,
                 concurrent: int) -> dict[str, Any]:
    """The ``tune`` section of ``report.json``."""
    t = config.tune
    keep = ("trial_id", "point", "valid_accuracy", "evaluations", "steps", "status", "error")
    return {
        "search": t.search,
        "scheduler": t.scheduler,
        "swept": list(swept_values(config)) + (["leave_one_teacher_out"] if t.leave_one_teacher_out else []),
        "max_concurrent_trials": concurrent,
        "evaluations_per_trial": max_t,
        "evaluations_total": sum(x["evaluations"] for x in trials),
        "trials": [{k: x[k] for k in keep} for x in trials],
        "best": {"trial_id": best["trial_id"], "point": best["point"], "valid_accuracy": best["valid_accuracy"],
                 "step": best["best_step"]},
    }


def plot(trials: list[dict[str, Any]], best: dict[str, Any], path: Path) -> None:
    """Valid accuracy against each swept weight, one panel per key; the exported trial is circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in trials[0]["point"] if len({x["point"].get(k) for x in trials}) > 1] or \
        list(trials[0]["point"])[:1]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys):
        for status, marker in (("completed", "o"), ("stopped early", "x"), ("error", "s")):
            shown = [x for x in trials if x["status"] == status and x["valid_accuracy"] is not None]
            if shown:
                ax.scatter([x["point"][key] for x in shown], [x["valid_accuracy"] for x in shown], marker=marker,
                           label=status)
        ax.scatter([best["point"][key]], [best["valid_accuracy"]], s=160, facecolors="none", edgecolors="red",
                   label="exported")
        ax.set_xlabel(key)
        if key == "lr":
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("valid accuracy (best of trial)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Loss-weight sweep", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
