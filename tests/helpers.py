"""Plain helpers the tests share (fixtures live in ``conftest.py``): the repository root and the authors' data
beside it, a small, fast run config built on the session's tiny models, and the GPU check's module
(``bench/gpu.py``). Import them (``from tests.helpers import REPO``) rather than working paths out again."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
# The authors' files (``../shared/data/tinyllm-official``); the tests that read them skip where it is absent.
SHARED_DATA = REPO.parent / "shared" / "data" / "tinyllm-official"


@functools.cache
def gpu_check() -> ModuleType:
    """``bench/gpu.py`` as a module (``bench`` is not a package): its checks, and ``ProjectReads``."""
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def driver_until(config: Path, ready, env: dict | None = None, timeout_s: float = 300):
    """``jobs/distill.py --config config`` in a process of its own (stdout and stderr piped, as text), returned
    once ``ready()`` holds while it still runs: the moment a test interrupts or kills it."""
    import os
    import subprocess
    import sys
    import time

    driver = subprocess.Popen([sys.executable, str(REPO / "jobs" / "distill.py"), "--config", str(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout_s
    while driver.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, "the driver ended before the moment the test waited for"
    return driver
