"""On the session's local Ray (2 CPUs, no GPU): a teacher asking for more GPUs than any node has fails
right after connecting, with one message naming the key, before any teacher starts (not a wait forever)."""

from __future__ import annotations

import time

import pytest

from tests.helpers import tiny_run_config
from tinyllm_ray import pipeline
from tinyllm_ray.config import ConfigError, from_dict

pytestmark = pytest.mark.ray


def test_teacher_asking_more_gpus_than_the_cluster_has_fails_before_any_teacher(ray_local, tiny_models, tmp_path):
    raw = tiny_run_config(tiny_models, tmp_path, "too-big")
    raw["teachers"][1]["num_gpus"] = 8
    raw["train"]["num_workers"] = 3  # 3 workers x 1 CPU on a 2-CPU cluster
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        pipeline.run(from_dict(raw))
    seconds = time.perf_counter() - start
    text = str(err.value)
    assert "teachers.1.num_gpus: asks 8 GPUs per replica but the largest node has 0" in text
    assert "train.num_workers: 3 workers of 1 CPU each, but the cluster can hold at most 2" in text
    assert "Traceback" not in text and "teachers.0" not in text
    assert not (tmp_path / "too-big" / "rationales").exists()  # no teacher ran, not even the one that fits
    print(f"refused {seconds:.2f} s after pipeline.run started")
    assert seconds < 60
