"""Shared fixtures: tiny local models (built once per session) and one local Ray cluster per session
(plain helpers are in ``tests/helpers.py``).

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
