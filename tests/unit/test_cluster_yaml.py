"""cluster.yaml (AWS) and cluster-gcp.yaml pass Ray's own cluster-config validation and keep the promises their
headers make; the GCP file's declared node resources are what the driver's fit check reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FILES = ["cluster.yaml", "cluster-gcp.yaml"]


@pytest.fixture(params=FILES)
def path(request) -> Path:
    return REPO / request.param


@pytest.fixture
def cluster(path) -> dict:
    return yaml.safe_load(path.read_text())


def test_ray_validates_it(cluster):
    # Ray's autoscaler schema check (what `ray up` runs); private module, used here only in a test.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cluster))


def test_a_typo_fails_that_validation(cluster):
    from jsonschema import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    with pytest.raises(ValidationError):
        validate_config(prepare_config({**cluster, "max_workers": "many"}))


def test_head_worker_types_dashboard_and_token(cluster, path):
    types = cluster["available_node_types"]
    assert {"head", "teacher_gpu", "student_gpu"} <= set(types)
    assert types["head"]["resources"] == {"CPU": 0}  # no teacher or trainer lands on the head
    for name in ("teacher_gpu", "student_gpu"):
        assert types[name]["min_workers"] == 0 < types[name]["max_workers"]
    head = " ".join(cluster["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head
    assert all("RAY_AUTH_MODE=token" in c for c in cluster["worker_start_ray_commands"] if "ray start" in c)
    assert any('.[vllm]' in c for c in cluster["setup_commands"])
    assert path.read_text().splitlines()[0].startswith(f"# ray up {path.name}")
    assert cluster["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"


def test_gcp_node_types_feed_the_fit_check(tmp_path):
    """ray up writes the resolved config to ~/ray_bootstrap_config.yaml on the head; from it the fit check
    knows the GPU nodes the autoscaler may add while none runs yet."""
    from tinyllm_ray.resources import autoscaler_node_types

    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text((REPO / "cluster-gcp.yaml").read_text())
    types = {n.name.split()[0]: (n.resources, n.max_count) for n in autoscaler_node_types(bootstrap)}
    assert types == {"teacher_gpu": ({"CPU": 48.0, "GPU": 4.0}, 4), "student_gpu": ({"CPU": 24.0, "GPU": 2.0}, 2)}
