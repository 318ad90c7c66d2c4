"""``resources.check_fits`` on fake node lists: an actor no node can ever host is a one-line error naming
the config key; what fits passes; an autoscaler's node types count as nodes. No Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyllm_ray import resources
from tinyllm_ray.config import ConfigError, from_dict
from tinyllm_ray.resources import NodeType, autoscaler_node_types, check_fits

CPU_NODE = NodeType("cpu", {"CPU": 2.0, "memory": 8e9})
GPU_NODE = NodeType("gpu", {"CPU": 8.0, "GPU": 4.0})


def config(*teachers: dict, **sections):
    raw = {
        "student": {"model": "google/flan-t5-small"},
        "teachers": [{"name": f"t{i}", "model": "some/llm", **t} for i, t in enumerate(teachers)],
        **sections,
    }
    return from_dict(raw)


@pytest.fixture(autouse=True)
def _no_skip(monkeypatch):
    monkeypatch.delenv(resources.SKIP_ENV, raising=False)


def message(cfg, nodes) -> str:
    with pytest.raises(ConfigError) as err:
        check_fits(cfg, nodes)
    return str(err.value)


def test_the_quickstart_shape_fits_a_cpu_node():
    check_fits(config({}, {}), [CPU_NODE])


def test_teacher_asking_more_gpus_than_any_node_names_the_key():
    text = message(config({}, {"num_gpus": 8}), [CPU_NODE])
    assert "teachers.1.num_gpus: asks 8 GPUs per replica but the largest node has 0" in text
    assert "teachers.0" not in text


def test_gpus_counted_on_the_largest_node_not_summed():
    nodes = [GPU_NODE, GPU_NODE]  # 8 GPUs in all, 4 per node
    assert "teachers.0.num_gpus: asks 5 GPUs per replica but the largest node has 4" in message(
        config({"num_gpus": 5}), nodes)
    check_fits(config({"num_gpus": 4, "replicas": 2}), nodes)


def test_cpus_per_replica():
    assert "teachers.0.num_cpus: asks 3 CPUs per replica but the largest node has 2" in message(
        config({"num_cpus": 3}), [CPU_NODE])


def test_gpus_and_cpus_must_be_on_the_same_node():
    nodes = [NodeType("big-cpu", {"CPU": 32.0}), NodeType("small-gpu", {"CPU": 2.0, "GPU": 1.0})]
    text = message(config({"num_gpus": 1, "num_cpus": 4}), nodes)
    assert "teachers.0.num_gpus: asks 4 CPUs and 1 GPUs per replica but no node has both" in text


def test_more_replicas_than_the_cluster_can_hold_at_once():
    text = message(config({"num_gpus": 3, "replicas": 3}), [GPU_NODE, GPU_NODE])
    assert "teachers.0.replicas: 3 replicas of 1 CPU, 3 GPU each, but the cluster can hold at most 2" in text


def test_teachers_are_checked_one_by_one_not_summed():
    # Two teachers that each fill the cluster: they run in turn, which is fine.
    check_fits(config({"num_gpus": 4}, {"num_gpus": 4}), [GPU_NODE])


def test_train_workers_and_eval_actors():
    cfg = config(train={"use_gpu": True, "num_workers": 2}, eval={"num_gpus": 2.0})
    text = message(cfg, [CPU_NODE])
    assert "train.use_gpu: asks 1 GPUs per worker but the largest node has 0" in text
    assert "eval.num_gpus: asks 2 GPUs per replica but the largest node has 0" in text
    text = message(config(train={"num_workers": 3}), [CPU_NODE])
    assert "train.num_workers: 3 workers of 1 CPU each, but the cluster can hold at most 2" in text
    check_fits(cfg, [GPU_NODE])


def test_every_problem_in_one_error():
    text = message(config({"num_gpus": 8}, {"num_cpus": 64}), [GPU_NODE])
    assert "teachers.0.num_gpus" in text and "teachers.1.num_cpus" in text
    assert resources.SKIP_ENV in text  # the escape hatch is named


def test_fractional_gpus_take_whole_slots():
    # 4 GPUs hold 2 replicas of 1.5 GPUs, not 2.67.
    assert "at most 2" in message(config({"num_gpus": 1.5, "replicas": 3}), [GPU_NODE])
    check_fits(config({"num_gpus": 0.5, "replicas": 8}), [GPU_NODE])


def test_skip_env(monkeypatch):
    monkeypatch.setenv(resources.SKIP_ENV, "1")
    check_fits(config({"num_gpus": 8}), [CPU_NODE])


def bootstrap(tmp_path: Path, types: dict) -> Path:
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(json.dumps({"cluster_name": "x", "available_node_types": types}))
    return path


def test_autoscaler_node_types_count_as_nodes(tmp_path):
    path = bootstrap(tmp_path, {
        "head": {"resources": {"CPU": 0}, "max_workers": 0},
        "teacher_gpu": {"resources": {"CPU": 48, "GPU": 4}, "min_workers": 0, "max_workers": 2},
    })
    scalable = autoscaler_node_types(path)
    assert [(n.resources, n.max_count) for n in scalable] == [({"CPU": 48.0, "GPU": 4.0}, 2)]
    head = NodeType("head", {"CPU": 0.0})
    check_fits(config({"num_gpus": 4, "replicas": 2}), [head, *scalable])  # no GPU node is up yet
    assert "at most 2" in message(config({"num_gpus": 4, "replicas": 3}), [head, *scalable])
    assert "largest node has 4" in message(config({"num_gpus": 8}), [head, *scalable])


def test_autoscaler_type_with_unknown_resources_skips_the_check(tmp_path):
    path = bootstrap(tmp_path, {"gpu": {"resources": {}, "max_workers": 2}})
    assert autoscaler_node_types(path) is None


def test_no_autoscaler_config(tmp_path):
    assert autoscaler_node_types(tmp_path / "absent.yaml") == []


def test_cluster_nodes_reads_ray_and_the_autoscaler(monkeypatch, tmp_path):
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: [
        {"NodeID": "a", "Alive": True, "Resources": {"CPU": 2.0}},
        {"NodeID": "b", "Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},  # dead: never counts
    ])
    monkeypatch.setattr(resources, "AUTOSCALER_CONFIG", tmp_path / "absent.yaml")
    assert [n.resources for n in resources.cluster_nodes()] == [{"CPU": 2.0}]
    assert "largest node has 0" in message(config({"num_gpus": 1}), resources.cluster_nodes())


# --- replicas: auto --------------------------------------------------------------------------------------------

EIGHT_GPUS = NodeType("gpu8", {"CPU": 96.0, "GPU": 8.0})


def replicas(cfg) -> list:
    return [t.replicas for t in cfg.teachers]


def test_auto_replicas_fill_an_eight_gpu_node_with_both_teachers_side_by_side():
    cfg = config({"num_gpus": 1, "replicas": "auto"}, {"num_gpus": 1, "replicas": "auto"})
    resolved = resources.resolve_replicas(cfg, {"CPU": 96.0, "GPU": 8.0}, [EIGHT_GPUS])
    assert replicas(resolved) == [4, 4] and replicas(cfg) == ["auto", "auto"]
    check_fits(resolved, [EIGHT_GPUS])  # all eight replicas can be placed at once


def test_auto_replicas_take_what_fixed_teachers_leave_and_gpu_less_teachers_get_one():
    cfg = config({"num_gpus": 1, "replicas": 2}, {"num_gpus": 2, "replicas": "auto"}, {"replicas": "auto"})
    assert replicas(resources.resolve_replicas(cfg, {"GPU": 8.0}, [EIGHT_GPUS])) == [2, 3, 1]


def test_auto_replicas_are_whole_replicas_per_node():
    """Two nodes of 3 GPUs: 6 GPUs would give 3 replicas of 2 GPUs, but each node holds only one."""
    three = NodeType("gpu3", {"CPU": 16.0, "GPU": 3.0})
    cfg = config({"num_gpus": 2, "replicas": "auto"})
    assert replicas(resources.resolve_replicas(cfg, {"GPU": 6.0}, [three, three])) == [2]


def test_auto_replicas_are_one_where_there_are_no_gpus():
    cfg = config({"num_gpus": 1, "replicas": "auto"})
    resolved = resources.resolve_replicas(cfg, {"CPU": 2.0, "GPU": 0.0}, [CPU_NODE])
    assert replicas(resolved) == [1]
    assert "asks 1 GPUs per replica but the largest node has 0" in message(resolved, [CPU_NODE])


@pytest.mark.parametrize("value", [0, "many", 1.5])
def test_replicas_are_a_positive_count_or_auto(value):
    with pytest.raises(ConfigError, match="teachers.0.replicas"):
        config({"replicas": value})


def test_the_cluster_capacity_counts_what_an_autoscaler_may_add():
    head = {"CPU": 8.0, "node:__internal_head__": 1.0}
    gpu_type = NodeType("gpu (autoscaler, up to 4)", {"CPU": 96.0, "GPU": 8.0}, 4)
    assert resources.cluster_capacity([head], [gpu_type]) == {"CPU": 392.0, "GPU": 32.0}
    # live nodes that outgrow the head plus the types (nodes joined by hand) count as they are
    assert resources.cluster_capacity([head, {"CPU": 96.0, "GPU": 8.0}], []) == {"CPU": 104.0, "GPU": 8.0}
