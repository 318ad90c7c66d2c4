"""Shared fixtures: tiny local models (built once per session) and one local Ray cluster per session.

Nothing here touches the network: HF_HUB_OFFLINE is set before transformers is imported, and the
models are random-weight ones built by ``tinyllm_ray.tiny``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    from tinyllm_ray.tiny import build_tiny_models

    out = tmp_path_factory.mktemp("tiny_models")
    build_tiny_models(out)
    return out


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (``ray.init`` costs seconds); never joins another cluster."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()


def tiny_run_config(models: Path, out_dir: Path, run_name: str, teachers: int = 2, **sections) -> dict:
    """A small, fast run config as plain data; ``sections`` replace or extend its sections."""
    raw = {
        "data": {"dataset": "synthetic", "n_train": 48, "n_valid": 16, "n_test": 16, "seed": 1},
        "teachers": [
            {"name": f"teacher-{x}", "model": str(models / f"teacher-{x}"), "shots": 2, "max_new_tokens": 12,
             "batch_size": 16, "min_rationale_words": 1}
            for x in "ab"[:teachers]
        ],
        "student": {"model": str(models / "student-t5"), "max_input_tokens": 96, "max_target_tokens": 16},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "log_every": 1,
                  "alpha": {f"teacher-{x}": 0.5 for x in "ab"[:teachers]}},
        "output": {"dir": str(out_dir), "run_name": run_name},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw
