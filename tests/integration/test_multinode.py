"""Placement on a multi-node Ray with fake GPUs: every Train worker and every teacher replica gets its own
GPU ids, teachers that cannot share the cluster run in turn and the job completes, and the fit check reads
the real nodes.

The cluster (``ray.cluster_utils.Cluster``: a head without GPU and two nodes of 3 CPUs and 2 GPUs, all on
this machine) is built by ``multinode_cluster.py`` in a child process, so it never meets the session's
local Ray (``tests/conftest.py::ray_local``), whatever order pytest runs the modules in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

# slow: about 2.5 minutes on 2 cores (a three-node cluster in a child process); run with python -m pytest -m slow
pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("multinode_cluster.py")


@pytest.fixture(scope="module")
def placement(tiny_models, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("multinode")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tiny_models), str(out)], capture_output=True,
                          text=True, timeout=600, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    result = json.loads((out / "result.json").read_text())
    print(f"\nmultinode: cluster up in {result['cluster_start_s']} s, the job in {result['teachers']['seconds']} s")
    return result


def test_cluster_has_two_gpu_nodes(placement):
    gpus = sorted(n["resources"].get("GPU", 0) for n in placement["nodes"])
    assert gpus == [0, 2, 2]


def test_fit_check_reads_the_largest_node(placement):
    assert placement["fits"]["2"] == "fits"
    assert "teachers.0.num_gpus: asks 3 GPUs per replica but the largest node has 2" in placement["fits"]["3"]


def test_train_workers_get_their_own_gpus(placement):
    workers = placement["train_workers"]
    assert sorted(w["rank"] for w in workers) == [0, 1, 2, 3]
    slots = [(w["node"], g) for w in workers for g in w["gpus"]]
    assert all(len(w["gpus"]) == 1 for w in workers)
    assert len(set(slots)) == 4  # no GPU handed to two workers
    assert len({w["node"] for w in workers}) == 2  # both GPU nodes used, never the head
    for w in workers:  # Ray also points CUDA at the worker's GPU
        assert w["gpus"][0] in w["cuda_visible"].split(",")


def test_teacher_replicas_get_their_own_gpus_and_teachers_take_turns(placement):
    t = placement["teachers"]
    n = t["n_train"]
    for name, per_replica in (("teacher-a", 2), ("teacher-b", 1)):
        rows = t["rows"][name]
        assert sorted(r["id"] for r in rows) == sorted({r["id"] for r in rows}) and len(rows) == n
        replicas = Counter((r["node"], r["gpus"]) for r in rows)
        assert len(replicas) == 2, replicas  # both replicas wrote rows
        gpu_sets = [set(g.split(",")) for _, g in replicas]
        assert all(len(g) == per_replica for g in gpu_sets), replicas
        slots = [(node, g) for node, gpus in replicas for g in gpus.split(",")]
        assert len(slots) == len(set(slots)), replicas  # no GPU shared by two replicas of a teacher
    assert t["student_steps"] == 2  # the job went on: the student trained (32 questions, batch 16) and reported
    # teacher-a's two replicas take every GPU of the cluster: teacher-b can only have run after it.
    assert {node for node, _ in Counter((r["node"], r["gpus"]) for r in t["rows"]["teacher-a"])} == {
        n["node"] for n in placement["nodes"] if n["resources"].get("GPU")}
