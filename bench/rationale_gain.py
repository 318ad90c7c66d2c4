"""Does learning rationales help the student? The tiny T5 student trained twice on the built-in dataset with
the same seed, data order and steps: label-only, and with the dataset's reference rationales imported as one
precomputed teacher (``data.rationales: precomputed`` gives the teacher ``reference``). Last line: one JSON object.

    python bench/rationale_gain.py [--n-train 512] [--epochs 12] [--set KEY=VALUE ...]

Both runs go through ``pipeline.run`` (the checkpoint exported is the best on valid; test is scored once at
the end). ``label_only_acc`` / ``with_rationales_acc`` are test accuracies by rank classification (the
student picks the option it finds most likely); the generate-and-match figures are listed beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402

from tinyllm_ray import pipeline  # noqa: E402
from tinyllm_ray.config import apply_override, from_dict  # noqa: E402
from tinyllm_ray.tiny import build_tiny_models  # noqa: E402


def run(models: dict, out: Path, name: str, rationales: bool, args: argparse.Namespace) -> dict:
    raw = {
        "data": {"dataset": "synthetic", "n_train": args.n_train, "n_valid": 128, "n_test": 256, "seed": 0,
                 "rationales": "precomputed" if rationales else "teachers"},
        "student": {"model": str(models["student-t5"]), "max_input_tokens": 128, "max_target_tokens": 64},
        "train": {"epochs": args.epochs, "batch_size": 16, "lr": 3e-3, "warmup_steps": 20, "seed": 0,
                  "log_every": 50, "checkpoint_every": args.checkpoint_every, "keep_checkpoints": 1},
        "eval": {"batch_size": 64},
        "output": {"dir": str(out), "run_name": name},
    }
    for assignment in args.set:
        apply_override(raw, assignment)
    report = pipeline.run(from_dict(raw))
    s = report["student"]
    return {k: s[k] for k in ("test_accuracy_rank", "test_accuracy", "valid_accuracy_rank", "valid_accuracy",
                              "steps", "exported_step", "seconds")}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--checkpoint-every", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="config override for both runs, KEY=VALUE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(tempfile.mkdtemp(prefix="bench-rationale-gain-"))
    models = build_tiny_models(out / "models")
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False)  # never a cluster started elsewhere
    label_only = run(models, out, "label-only", False, args)
    with_rationales = run(models, out, "with-rationales", True, args)
    return {
        "bench": "rationale_gain",
        "label_only_acc": label_only["test_accuracy_rank"],
        "with_rationales_acc": with_rationales["test_accuracy_rank"],
        "scorer": "rank classification, test split",
        "label_only": label_only,
        "with_rationales": with_rationales,
        "settings": {"n_train": args.n_train, "epochs": args.epochs, "overrides": args.set},
    }


if __name__ == "__main__":
    print(json.dumps(main()))
