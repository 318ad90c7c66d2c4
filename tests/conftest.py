"""Shared fixtures: tiny local models (built once per session) and one local Ray cluster per session
(plain helpers, ``REPO`` among them, are in ``tests/helpers.py``).

Nothing here touches the network: HF_HUB_OFFLINE is set here, once for every test file, before any of them
imports transformers (``huggingface_hub`` reads it at import: a test that set it later would change nothing),
and the models are random-weight ones built by ``tinyllm_ray.tiny``.

Every test that uses the session's Ray (``ray_local``) is marked ``ray``, wherever it lives: ``-m "not ray"``
leaves out each test that starts Ray this way. A test that starts Ray otherwise (a subprocess) says so itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection, which must see the mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


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
