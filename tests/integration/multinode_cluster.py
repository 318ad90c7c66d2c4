"""A three-node Ray on one machine whose worker nodes declare fake GPUs; writes one JSON file of who ran where.

    python tests/integration/multinode_cluster.py TINY_MODELS_DIR OUT_DIR    # writes OUT_DIR/result.json

Run by ``test_multinode.py`` in its own process (it starts its own cluster, which must not meet the test
session's local Ray). The cluster (``ray.cluster_utils.Cluster``): a head with 1 CPU and no GPU, and two
nodes with 3 CPUs and 2 GPUs each, 4 GPUs in all. Ray hands out GPU ids on CPU-only nodes as it would on
real ones; nothing here touches CUDA.

1. ``fits``: ``resources.check_fits`` against the live nodes: a teacher of 2 GPUs per replica fits, one of
   3 does not (4 GPUs in the cluster, but at most 2 on one node).
2. ``train_workers``: a ``TorchTrainer`` of 4 workers with ``use_gpu=True`` (1 GPU each, the student's
   scaling when ``train.use_gpu`` is on) and the gloo backend (torch cannot use a fake GPU); each worker
   writes its rank, node id, ``ray.get_gpu_ids()`` and ``CUDA_VISIBLE_DEVICES``.
3. ``teachers``: the whole job (``pipeline.run``) with two tiny teachers that cannot run side by side:
   teacher-a has 2 replicas x 2 GPUs (the whole cluster), teacher-b 2 replicas x 1 GPU; the rationale
   store's rows carry the ``node`` and ``gpus`` of the actor that wrote them; the student trains on CPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
# Ray Data starts feeding an actor pool once all its actors are up, so every replica of a teacher gets
# blocks (otherwise the first replica ready may finish a small dataset alone, its twin never writing a row).
os.environ["RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S"] = "300"

import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import ray.train  # noqa: E402
import ray.train.torch  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from tests.helpers import tiny_run_config  # noqa: E402
from tinyllm_ray import pipeline, resources  # noqa: E402
from tinyllm_ray.config import ConfigError, from_dict  # noqa: E402

GPU_NODES, GPUS_PER_NODE, CPUS_PER_NODE = 2, 2, 3


def start_cluster() -> Cluster:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0,
                                                            "include_dashboard": False})
    for _ in range(GPU_NODES):
        cluster.add_node(num_cpus=CPUS_PER_NODE, num_gpus=GPUS_PER_NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    return cluster


def fits(models: Path, out: Path) -> dict[str, str]:
    result = {}
    for gpus in (2, 3):
        raw = tiny_run_config(models, out, "fits", teachers=1)
        raw["teachers"][0]["num_gpus"] = gpus
        try:
            resources.check_fits(from_dict(raw))
            result[str(gpus)] = "fits"
        except ConfigError as err:
            result[str(gpus)] = str(err)
    return result


def _record_worker(loop_config: dict) -> None:
    context = ray.train.get_context()
    record = {"rank": context.get_world_rank(), "node": ray.get_runtime_context().get_node_id(),
              "gpus": [str(g) for g in ray.get_gpu_ids()], "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
    Path(loop_config["out"], f"worker-{record['rank']}.json").write_text(json.dumps(record))
    ray.train.report({"rank": record["rank"]})


def train_workers(out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    trainer = ray.train.torch.TorchTrainer(
        _record_worker,
        train_loop_config={"out": str(out)},
        scaling_config=ray.train.ScalingConfig(num_workers=GPU_NODES * GPUS_PER_NODE, use_gpu=True,
                                               resources_per_worker={"CPU": 1, "GPU": 1}),
        torch_config=ray.train.torch.TorchConfig(backend="gloo"),  # nccl needs a real GPU
        run_config=ray.train.RunConfig(name="placement", storage_path=str(out / "storage")),
    )
    trainer.fit()
    return [json.loads(p.read_text()) for p in sorted(out.glob("worker-*.json"))]


def teachers(models: Path, out: Path) -> dict:
    """The whole job (``pipeline.run``: teachers, student, evaluation) with the two teachers that take turns."""
    raw = tiny_run_config(models, out, "teachers")
    raw["data"].update(n_train=32, n_valid=4, n_test=4)  # 8 blocks of 4 questions (one actor call each)
    raw["teachers"][0].update(replicas=2, num_gpus=2, batch_size=1, max_new_tokens=8)
    raw["teachers"][1].update(replicas=2, num_gpus=1, batch_size=1, max_new_tokens=8)
    start = time.perf_counter()
    report = pipeline.run(from_dict(raw))
    seconds = time.perf_counter() - start
    run_dir = Path(report["run_dir"])
    rows = {t["name"]: pq.read_table(run_dir / "rationales" / t["name"], columns=["id", "node", "gpus"]).to_pylist()
            for t in report["teachers"]}
    return {"infos": [{k: t.get(k) for k in ("name", "rationales", "rejected")} for t in report["teachers"]],
            "student_steps": report["student"]["steps"], "rows": rows, "n_train": report["dataset"]["train"],
            "seconds": round(seconds, 1)}


def main(models: Path, out: Path) -> dict:
    start = time.perf_counter()
    cluster = start_cluster()
    try:
        nodes = [{"node": n["NodeID"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]]
        result = {"nodes": nodes, "cluster_start_s": round(time.perf_counter() - start, 1), "fits": fits(models, out)}
        result["train_workers"] = train_workers(out / "train")
        result["teachers"] = teachers(models, out)
        return result
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    models_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    (out_dir / "result.json").write_text(json.dumps(main(models_dir, out_dir)))
