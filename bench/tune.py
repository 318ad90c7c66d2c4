"""ASHA against a full grid over the same loss-weight space: how much training ASHA saves, and whether it
still finds the grid's best. Last line: one JSON object.

    python bench/tune.py [--n-train 128] [--n-valid 256] [--epochs 4] [--checkpoint-every 2] [--set KEY=VALUE ...]

The tiny T5 student on the built-in dataset with its reference rationales as the one teacher
(``data.rationales: precomputed``, no teacher model runs). Both sweeps go through ``pipeline.run`` with the
same grid and the same seed, one trial at a time (so both are deterministic); one uses ASHA
(``tune.scheduler: asha``, grace period 1, reduction factor 3 as by default), the other trains every trial to the end
(``none``). The default grid: ``alpha.reference`` in {0, 0.25, 1, 4} x ``lr`` in {1e-3, 3e-3, 1e-2} with
``gamma`` 1, 12 trials of 16 evaluations (under AdamW only the ratio alpha/gamma matters, so sweeping both
would repeat trials). An *iteration* is one evaluation (a valid score reported to Tune);
``asha_vs_grid_iterations`` = ASHA's / the grid's (target <= 0.4). ``asha_best``/``grid_best``: valid accuracy
(rank classification, 256 questions) of the best checkpoint each sweep exported (target: within 1 point).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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


def sweep(models: Path, out: Path, scheduler: str, args: argparse.Namespace) -> dict:
    raw = {
        "data": {"dataset": "synthetic", "n_train": args.n_train, "n_valid": args.n_valid, "n_test": 64,
                 "seed": 0, "rationales": "precomputed"},
        "student": {"model": str(models / "student-t5"), "max_input_tokens": 128, "max_target_tokens": 64},
        "train": {"epochs": args.epochs, "batch_size": 16, "lr": 3e-3, "warmup_steps": 4, "seed": 0,
                  "log_every": 1000, "checkpoint_every": args.checkpoint_every, "keep_checkpoints": 1},
        "eval": {"batch_size": 64},
        "tune": {"gamma": args.gamma, "alpha": {"reference": args.alpha}, "lr": args.lr, "scheduler": scheduler,
                 "grace_period": args.grace_period, "reduction_factor": args.reduction_factor,
                 "max_concurrent_trials": args.concurrent},
        "output": {"dir": str(out), "run_name": f"tune-{scheduler}"},
    }
    for assignment in args.set:
        apply_override(raw, assignment)
    start = time.perf_counter()
    report = pipeline.run(from_dict(raw))
    tune = report["tune"]
    return {"evaluations": tune["evaluations_total"], "best": tune["best"]["valid_accuracy"],
            "best_point": tune["best"]["point"], "trials": len(tune["trials"]),
            "stopped_early": sum(t["status"] == "stopped early" for t in tune["trials"]),
            "test_accuracy_rank": report["student"]["test_accuracy_rank"],
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=128)
    parser.add_argument("--n-valid", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--checkpoint-every", type=int, default=2, help="steps between evaluations")
    parser.add_argument("--gamma", type=float, nargs="+", default=[1.0])
    parser.add_argument("--alpha", type=float, nargs="+", default=[0.0, 0.25, 1.0, 4.0])
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--grace-period", type=int, default=1)
    parser.add_argument("--reduction-factor", type=float, default=3.0)
    parser.add_argument("--concurrent", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="config override for both sweeps, KEY=VALUE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    models = out / "models"
    build_tiny_models(models)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    grid = sweep(models, out, "none", args)
    asha = sweep(models, out, "asha", args)
    ray.shutdown()
    result = {"bench": "tune", "asha_vs_grid_iterations": round(asha["evaluations"] / grid["evaluations"], 3),
              "asha_best": asha["best"], "grid_best": grid["best"], "asha": asha, "grid": grid,
              "cpus": args.cpus,
              "space": {"gamma": args.gamma, "alpha.reference": args.alpha, "lr": args.lr}}
    print(json.dumps({k: v for k, v in result.items() if k not in ("bench", "asha_vs_grid_iterations", "asha_best",
                                                                    "grid_best")}), flush=True)
    print(json.dumps({"bench": "tune", **{k: result[k] for k in ("asha_vs_grid_iterations", "asha_best",
                                                                 "grid_best")}}), flush=True)
    return result


if __name__ == "__main__":
    main()
