"""The paper's table on the built-in dataset: do the teachers, label-only fine-tuning, each teacher alone and
all teachers together (TinyLLM) rank as the method claims? Last line: one JSON object.

    python bench/paper_table.py [--seeds 0 1 2] [--n-train 256] [--epochs 10] [--set KEY=VALUE ...]

Per seed, one ``pipeline.run`` with ``compare: true`` on the built-in synthetic dataset (that seed's questions,
training seed and shuffling): the two tiny *trained* teachers (``skilled-a``/``skilled-b``, each taught two
of the four problem families, built once by ``tinyllm_ray.tiny``) write rationales and answer valid and test
themselves; the tiny T5 student is trained label-only, on each teacher alone and on both, with the same
budget and selection on valid; test is scored once per selected model. Accuracy is generate-and-match (the
paper's scorer); rank classification is listed beside it. The JSON's ``*_test_acc`` figures are means over the
seeds; ``per_seed`` holds every seed's table, ``targets`` whether the issue's targets were met.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from tinyllm_ray import pipeline  # noqa: E402
from tinyllm_ray.config import apply_override, from_dict  # noqa: E402
from tinyllm_ray.tiny import build_tiny_models  # noqa: E402
from tinyllm_ray.tiny_trained import TRAINED_TEACHERS  # noqa: E402


def run_seed(models: Path, out: Path, seed: int, args: argparse.Namespace) -> dict:
    raw = {
        "data": {"dataset": "synthetic", "n_train": args.n_train, "n_valid": args.n_valid, "n_test": args.n_test,
                 "seed": seed},
        "teachers": [{"name": name, "model": str(models / name), "shots": args.shots, "max_new_tokens": 64,
                      "batch_size": 16} for name in TRAINED_TEACHERS],
        "student": {"model": str(models / "student-t5"), "max_input_tokens": 128, "max_target_tokens": 64},
        "train": {"epochs": args.epochs, "batch_size": 16, "lr": 3e-3, "warmup_steps": 10, "seed": seed,
                  "log_every": 100, "keep_checkpoints": 1},
        "eval": {"batch_size": 64},
        "compare": True,
        "output": {"dir": str(out), "run_name": f"seed-{seed}"},
    }
    for assignment in args.set:
        apply_override(raw, assignment)
    start = time.perf_counter()
    report = pipeline.run(from_dict(raw))
    return {"seconds": round(time.perf_counter() - start, 1), "rows": report["comparison"]}


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.fmean(values), 4) if values else None


def summarise(per_seed: list[dict]) -> dict:
    """Means over seeds of each row's test accuracy, keyed like the issue's JSON."""
    def column(kind: str, key: str = "test_accuracy") -> dict[str, float | None]:
        rows: dict[str, list] = {}
        for seed in per_seed:
            for r in seed["rows"]:
                if r["kind"] == kind:
                    rows.setdefault(r["row"], []).append(r[key])
        return {row: _mean(v) for row, v in rows.items()}

    teachers = {row.split()[1]: v for row, v in column("teacher").items()}
    baselines = column("baseline")
    label_only = baselines.pop("student, label-only")
    single = {row.removeprefix("student, ").removesuffix(" alone"): v for row, v in baselines.items()}
    [multi] = column("student").values()
    return {"teachers_test_acc": teachers, "label_only_test_acc": label_only, "single_teacher_test_acc": single,
            "multi_teacher_test_acc": multi,
            "rank": {"label_only": _mean([r["test_accuracy_rank"] for s in per_seed for r in s["rows"]
                                          if r["row"] == "student, label-only"]),
                     "single_teacher": {k.removeprefix("student, ").removesuffix(" alone"): v
                                        for k, v in column("baseline", "test_accuracy_rank").items()
                                        if k != "student, label-only"},
                     "multi_teacher": next(iter(column("student", "test_accuracy_rank").values()))}}


def table(summary: dict) -> str:
    lines = ["| row | test accuracy (generate) | test accuracy (rank) |", "|---|---|---|"]
    for name, v in summary["teachers_test_acc"].items():
        lines.append(f"| teacher {name} (answers by itself) | {v} | n/a |")
    lines.append(f"| student, label-only | {summary['label_only_test_acc']} | {summary['rank']['label_only']} |")
    for name, v in summary["single_teacher_test_acc"].items():
        lines.append(f"| student, {name} alone | {v} | {summary['rank']['single_teacher'].get(name)} |")
    lines.append(f"| student, all teachers (TinyLLM) | {summary['multi_teacher_test_acc']} | "
                 f"{summary['rank']['multi_teacher']} |")
    return "\n".join(lines)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-valid", type=int, default=64)
    parser.add_argument("--n-test", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--shots", type=int, default=0, help="in-context examples per teacher prompt")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--models", type=Path, help="tiny models directory (default: a new temporary one)")
    parser.add_argument("--set", action="append", default=[], help="config override for every run, KEY=VALUE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(tempfile.mkdtemp(prefix="bench-paper-table-"))
    models = args.models or out / "models"
    build_start = time.perf_counter()
    build_tiny_models(models, trained=True)
    build_s = round(time.perf_counter() - build_start, 1)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False)  # never a cluster started elsewhere
    per_seed = [{"seed": seed, **run_seed(models, out, seed, args)} for seed in args.seeds]
    summary = summarise(per_seed)
    print(table(summary), flush=True)
    m, a = summary["multi_teacher_test_acc"], summary["label_only_test_acc"]
    targets = {
        "multi_beats_label_only_by_0.02": m >= a + 0.02,
        "multi_at_least_every_single_teacher": all(m >= v for v in summary["single_teacher_test_acc"].values()),
        "multi_beats_every_teacher": all(v is not None and m > v for v in summary["teachers_test_acc"].values()),
    }
    return {"bench": "paper_table", "seeds": args.seeds, **summary, "targets": targets, "per_seed": per_seed,
            "settings": {"n_train": args.n_train, "n_test": args.n_test, "epochs": args.epochs, "shots": args.shots,
                         "overrides": args.set}, "tiny_models_build_s": build_s}


if __name__ == "__main__":
    print(json.dumps(main()))
