"""cluster.yaml passes Ray's own cluster-config validation and keeps the promises its header makes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_ray_validates_it(cluster):
    # Ray's autoscaler schema check (what `ray up` runs); private module, used here only in a test.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cluster))


def test_a_typo_fails_that_validation(cluster):
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    with pytest.raises(ValidationError):
        validate_config(prepare_config({**cluster, "max_workers": "many"}))


def test_head_worker_types_dashboard_and_token(cluster):
    types = cluster["available_node_types"]
    assert {"head", "teacher_gpu", "student_gpu"} <= set(types)
    assert types["head"]["resources"] == {"CPU": 0}  # no teacher or trainer lands on the head
    for name in ("teacher_gpu", "student_gpu"):
        assert types[name]["min_workers"] == 0 < types[name]["max_workers"]
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head
    assert all("RAY_AUTH_MODE=token" in c for c in cluster["worker_start_ray_commands"] if "ray start" in c)
    assert any('.[vllm]' in c for c in cluster["setup_commands"])
    assert CLUSTER.read_text().splitlines()[0].startswith("# ray up cluster.yaml")
