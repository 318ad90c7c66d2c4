"""Does every actor the config asks for fit on some node of the cluster, ever? Checked right after
connecting to Ray, before any teacher starts.

Ray queues an actor whose resources no node can offer and waits for it forever (an autoscaler might
add such a node). ``check_fits(config)`` turns that wait into one ``ConfigError`` naming the key:

    teachers.0.num_gpus: asks 8 GPUs per replica but the largest node has 0

It checks, per replica / worker, that one node holds all of its CPUs and GPUs (teachers, the student's
Ray Train workers, the evaluation actors), and that the whole group (``replicas`` x per-replica, or
``num_workers`` x per-worker) fits in the cluster's total, since a teacher's replicas or Train's
workers are scheduled together and would otherwise wait as well. And it refuses a ``vllm`` teacher
with ``num_gpus: 0`` when some node has GPUs: vLLM's CUDA build would take a GPU that Ray does not
account for (on a cluster without GPUs it runs on the CPU, as the tests do).

Nodes the cluster can offer:

- the live nodes (``ray.nodes()``), and
- on a cluster started by ``ray up``, every node type of its autoscaler: the head node holds the
  resolved cluster config in ``~/ray_bootstrap_config.yaml`` (``available_node_types``, with the
  resources ``ray up`` filled in from the instance type), so a GPU node type with ``min_workers: 0``
  counts even while no such node runs. A node type whose resources are not known (not declared and
  not filled in) makes the check skip, with a log line: it cannot tell what that node would offer.
- Other autoscalers (KubeRay, a cloud's own) are invisible from here: set ``TINYLLM_SKIP_FIT_CHECK=1``
  in the job's environment to skip the check and let Ray wait for the autoscaler.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tinyllm_ray.config import Config, ConfigError

log = logging.getLogger("tinyllm_ray")

SKIP_ENV = "TINYLLM_SKIP_FIT_CHECK"
AUTOSCALER_CONFIG = Path("~/ray_bootstrap_config.yaml")
_CHECKED = ("CPU", "GPU")
_NAMES = {"CPU": "CPUs", "GPU": "GPUs"}


@dataclass(frozen=True)
class Demand:
    """What one group of actors asks for: ``count`` replicas of ``per_replica`` resources."""

    key: dict[str, str]  # resource -> the config key that sets it, e.g. {"GPU": "teachers.0.num_gpus"}
    per_replica: dict[str, float]
    count: int
    count_key: str
    unit: str  # "replica" or "worker"


@dataclass(frozen=True)
class NodeType:
    """A node the cluster may have: ``resources`` each, up to ``max_count`` of them (live nodes: 1)."""

    name: str
    resources: dict[str, float]
    max_count: int = 1


def demands(config: Config) -> list[Demand]:
    """Every actor group of the run, with the config keys that size it."""
    out = []
    for i, t in enumerate(config.teachers):
        out.append(Demand({"CPU": f"teachers.{i}.num_cpus", "GPU": f"teachers.{i}.num_gpus"},
                          {"CPU": t.num_cpus, "GPU": t.num_gpus}, t.replicas, f"teachers.{i}.replicas", "replica"))
    tc = config.train
    out.append(Demand({"CPU": "train.cpus_per_worker", "GPU": "train.use_gpu"},
                      {"CPU": tc.cpus_per_worker, "GPU": 1.0 if tc.use_gpu else 0.0}, tc.num_workers,
                      "train.num_workers", "worker"))
    ec = config.eval
    out.append(Demand({"CPU": "eval.num_cpus", "GPU": "eval.num_gpus"},
                      {"CPU": ec.num_cpus, "GPU": ec.num_gpus}, ec.replicas, "eval.replicas", "replica"))
    return out


def problems(wanted: Iterable[Demand], nodes: list[NodeType]) -> list[str]:
    """One line per demand that can never be scheduled on ``nodes``; empty when everything fits."""
    out = []
    for d in wanted:
        asked = {r: v for r, v in d.per_replica.items() if v > 0}
        largest = {r: max((n.resources.get(r, 0.0) for n in nodes), default=0.0) for r in _CHECKED}
        too_big = [r for r in _CHECKED if asked.get(r, 0) > largest[r]]
        if too_big:
            r = too_big[0]
            out.append(f"{d.key[r]}: asks {_num(asked[r])} {_NAMES[r]} per {d.unit} but the largest node "
                       f"has {_num(largest[r])}")
            continue
        if not any(all(n.resources.get(r, 0.0) >= v for r, v in asked.items()) for n in nodes):
            wants = " and ".join(f"{_num(v)} {_NAMES.get(r, r)}" for r, v in asked.items())
            out.append(f"{d.key['GPU']}: asks {wants} per {d.unit} but no node has both "
                       f"(nodes: {_describe(nodes)})")
            continue
        # A replica takes whole slots of a node: a node of 4 GPUs holds 2 replicas of 1.5 GPUs, not 2.67.
        slots = sum(n.max_count * _slots(n.resources, asked) for n in nodes)
        if d.count > slots:
            out.append(f"{d.count_key}: {d.count} {d.unit}s of {_describe_one(asked)} each, but the cluster "
                       f"can hold at most {slots} at once (nodes: {_describe(nodes)})")
    return out


def unaccounted_gpus(config: Config, nodes: list[NodeType]) -> list[str]:
    """One line per ``vllm`` teacher without GPUs when some node has them: it would run on one anyway."""
    with_gpus = [n for n in nodes if n.resources.get("GPU", 0.0) > 0]
    if not with_gpus:
        return []
    return [f"teachers.{i}.num_gpus: a vllm teacher needs num_gpus > 0 on a cluster with GPUs (nodes: "
            f"{_describe(with_gpus)}); with 0 it would take a GPU Ray does not account for (or use engine: hf)"
            for i, t in enumerate(config.teachers) if t.engine == "vllm" and t.num_gpus == 0]


def check_fits(config: Config, nodes: list[NodeType] | None = None) -> None:
    """Raise ``ConfigError`` listing every actor group the cluster can never host (and every ``vllm``
    teacher without GPUs on a cluster with GPUs: ``unaccounted_gpus``). ``nodes`` defaults to
    the connected cluster's live nodes plus its autoscaler's node types (see the module docstring)."""
    if os.environ.get(SKIP_ENV, "").strip() not in ("", "0"):
        log.info("resource check skipped (%s is set)", SKIP_ENV)
        return
    if nodes is None:
        nodes = cluster_nodes()
        if nodes is None:
            return
    errors = problems(demands(config), nodes) + unaccounted_gpus(config, nodes)
    if errors:
        raise ConfigError(
            "the cluster can never run this config:\n" + "\n".join(f"  {e}" for e in errors)
            + f"\n(if an autoscaler Ray cannot see here will add bigger nodes, set {SKIP_ENV}=1)"
        )


def cluster_nodes() -> list[NodeType] | None:
    """Live nodes of the connected Ray plus the ``ray up`` autoscaler's node types; ``None`` when an
    autoscaler node type's resources are unknown (nothing can be concluded)."""
    import ray

    live = [NodeType(n.get("NodeManagerHostname", n["NodeID"]), dict(n.get("Resources", {})))
            for n in ray.nodes() if n.get("Alive")]
    scalable = autoscaler_node_types(AUTOSCALER_CONFIG.expanduser())
    if scalable is None:
        return None
    return live + scalable


def autoscaler_node_types(path: Path) -> list[NodeType] | None:
    """Node types a ``ray up`` autoscaler may launch, from its resolved config (``[]`` when there is no
    such file). ``None`` when a type that may be launched declares no CPU/GPU figures."""
    if not path.is_file():
        return []
    try:
        raw: Any = json.loads(path.read_text())  # ray up writes JSON under a .yaml name
    except json.JSONDecodeError:
        raw = yaml.safe_load(path.read_text())
    out = []
    for name, spec in (raw or {}).get("available_node_types", {}).items():
        count = int(spec.get("max_workers", 0) or 0)
        if count == 0:
            continue  # never launched as a worker (e.g. the head type, already live)
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items() if isinstance(v, int | float)}
        if not any(r in resources for r in _CHECKED):
            log.warning("resource check skipped: autoscaler node type %r in %s declares no CPU/GPU resources",
                        name, path)
            return None
        out.append(NodeType(f"{name} (autoscaler, up to {count})", resources, count))
    return out


def cluster_capacity(live: list[dict[str, float]], launchable: list[Any]) -> dict[str, float]:
    """CPUs and GPUs the cluster can grow to. ``live``: the resources of each live node; ``launchable``: the node
    types a ``ray up`` autoscaler may add (``autoscaler_node_types``: ``resources`` and ``max_count`` each). The
    live nodes, or the live head plus every launchable type at its ``max_workers``, whichever is larger: ``ray.cluster_resources()`` alone counts only the nodes up now, and on a cluster whose GPU workers
    are scaled down it would say one trial at a time."""
    head = [n for n in live if "node:__internal_head__" in n]
    out = {}
    for r in ("CPU", "GPU"):
        now = sum(n.get(r, 0.0) for n in live)
        grown = sum(n.get(r, 0.0) for n in head) + sum(t.resources.get(r, 0.0) * t.max_count for t in launchable)
        out[r] = max(now, grown)
    return out


def capacity_now() -> dict[str, float]:
    """``cluster_capacity`` of the connected cluster (an autoscaler whose node types are unknown counts as none)."""
    import ray

    live = [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
    return cluster_capacity(live, autoscaler_node_types(AUTOSCALER_CONFIG.expanduser()) or [])


def resolve_replicas(config: Config, capacity: dict[str, float] | None = None,
                     nodes: list[NodeType] | None = None) -> Config:
    """``config`` with each ``replicas: auto`` teacher's count decided: a teacher with GPUs gets as many replicas
    as the cluster's GPUs (``capacity``, default ``capacity_now()``) hold with every teacher side by side, after
    the fixed-count teachers' GPUs, in proportion to its GPUs per replica; at least 1, and no more than whole
    replicas per node allow (``nodes``: ``problems`` decides); a teacher without GPUs gets 1."""
    auto = [i for i, t in enumerate(config.teachers) if t.replicas == "auto"]
    if not auto:
        return config
    capacity = capacity_now() if capacity is None else capacity
    on_gpus = [i for i in auto if config.teachers[i].num_gpus > 0]
    counts = dict.fromkeys(auto, 1)
    if on_gpus:
        fixed = sum(t.replicas * t.num_gpus for t in config.teachers if t.replicas != "auto")
        per_round = sum(config.teachers[i].num_gpus for i in on_gpus)
        rounds = max(1, int((capacity.get("GPU", 0.0) - fixed) // per_round))
        keys = {f"teachers.{i}.replicas" for i in on_gpus}

        def fits(r: int) -> bool:
            trial = _with_replicas(config, {**counts, **dict.fromkeys(on_gpus, r)})
            return not any(d.count_key in keys and problems([d], nodes) for d in demands(trial))

        while nodes is not None and rounds > 1 and not fits(rounds):
            rounds -= 1
        counts.update(dict.fromkeys(on_gpus, rounds))
    resolved = _with_replicas(config, counts)
    log.info("replicas: auto -> %s (cluster: %g GPUs)", ", ".join(
        f"{resolved.teachers[i].name} {counts[i]}" for i in auto), capacity.get("GPU", 0.0))
    return resolved


def _with_replicas(config: Config, counts: dict[int, int]) -> Config:
    teachers = [dataclasses.replace(t, replicas=counts.get(i, t.replicas)) for i, t in enumerate(config.teachers)]
    return dataclasses.replace(config, teachers=teachers)


def _slots(resources: dict[str, float], asked: dict[str, float]) -> int:
    counts = [int(resources.get(r, 0.0) // v) for r, v in asked.items() if v > 0]
    return min(counts) if counts else 1_000_000


def _num(value: float) -> str:
    return f"{value:g}"


def _describe_one(resources: dict[str, float]) -> str:
    return ", ".join(f"{_num(resources.get(r, 0.0))} {r}" for r in _CHECKED if r in resources) or "nothing"


def _describe(nodes: list[NodeType]) -> str:
    return "; ".join(f"{n.name}: {_describe_one(n.resources)}" for n in nodes) or "none"
