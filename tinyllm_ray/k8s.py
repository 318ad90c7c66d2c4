"""KubeRay manifests for a run: the job ``ray up`` + ``ray job submit`` runs, as a ``RayJob`` (a cluster made for the
job and deleted after it) or a ``RayCluster`` (kept, for several ``ray job submit``s), with its GPU worker groups
sized from the config's teachers and student, so the manifest and the config cannot drift.

    tinyllm k8s --config configs/paper/obqa.yaml [--kind rayjob|raycluster] [--image IMAGE] > rayjob.yaml

What it writes (docs/kubernetes.md says how to use it):

- a CPU head (``num-cpus: 0``: the driver and Ray's control plane, like ``cluster.yaml``'s head);
- ``teacher-gpu`` pods of ``teacher_gpus_per_pod`` GPUs, as many as the teachers' replicas take side by side
  (each teacher's replicas packed into whole pods: a replica's GPUs never span two pods);
- ``student-gpu`` pods for the Ray Train workers (one GPU each), or CPU pods when ``train.use_gpu`` is off;
- the run directory on a ReadWriteMany volume (``runs_claim``) mounted at ``/mnt/runs`` on every pod, which the
  RayJob's entrypoint passes as ``--output-dir``;
- the Ray token (``RAY_AUTH_MODE=token``) and ``HF_TOKEN`` from Kubernetes Secrets by reference, never inline;
- worker groups that start at their full size (so the job's resource check and ``replicas: auto`` see them) and
  that the in-tree autoscaler scales down when idle (the teachers' pods after the teacher stage).

The field names are KubeRay's ``ray.io/v1`` API (``KUBERAY_VERSION``); pod templates are Kubernetes core/v1.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml

from tinyllm_ray.config import Config, ConfigError

KUBERAY_VERSION = "1.4"  # the oldest KubeRay whose ray.io/v1 fields (and token auth by env) these manifests use
RUNS_MOUNT = "/mnt/runs"
APP_DIR = "/home/ray/tinyllm_ray"  # where k8s/Dockerfile puts the project in the image
TOKEN_SECRET, TOKEN_KEY = "tinyllm-ray-token", "auth_token"
HF_SECRET, HF_KEY = "tinyllm-hf-token", "token"
GPU = "nvidia.com/gpu"
KINDS = ("rayjob", "raycluster")


@dataclasses.dataclass(frozen=True)
class Pods:
    """The pod shapes: GPUs per teacher / student pod (the GPU nodes' size: 4 as ``cluster.yaml``'s g6e/g6
    .12xlarge), and CPUs and memory per GPU (a pod asks for that many times its GPUs)."""

    teacher_gpus_per_pod: int = 4
    student_gpus_per_pod: int = 4
    cpus_per_gpu: int = 8
    memory_gib_per_gpu: int = 48
    auto_teacher_pods: int = 2  # teacher pods for a config whose teachers say ``replicas: auto``
    image: str = "tinyllm-ray:latest"
    runs_claim: str = "tinyllm-runs"
    name: str | None = None


@dataclasses.dataclass(frozen=True)
class Group:
    """One worker group: its pods and what each offers to Ray."""

    name: str
    pods: int
    gpus: int
    cpus: int
    memory_gib: int


def teacher_group(config: Config, pods: Pods) -> Group | None:
    """The teachers' pods: each teacher's replicas packed into pods of ``teacher_gpus_per_pod`` GPUs; None when no
    teacher uses a GPU (CPU teachers then share the student's pods)."""
    per_pod = pods.teacher_gpus_per_pod
    count, cpus = 0, 0
    for i, t in enumerate(config.teachers):
        if t.num_gpus <= 0:
            continue
        if t.num_gpus > per_pod:
            raise ConfigError(f"teachers.{i}.num_gpus: {t.num_gpus:g} GPUs per replica do not fit in a pod of "
                              f"{per_pod} (--teacher-gpus-per-pod)")
        fit = math.floor(per_pod / t.num_gpus)
        if t.replicas == "auto":
            count += pods.auto_teacher_pods
        else:
            count += math.ceil(t.replicas / fit)
        cpus = max(cpus, fit * t.num_cpus)
    if count == 0:
        return None
    return Group("teacher-gpu", count, per_pod, max(cpus, per_pod * pods.cpus_per_gpu),
                 per_pod * pods.memory_gib_per_gpu)


def student_group(config: Config, pods: Pods) -> Group:
    """The Ray Train workers' pods (one GPU per worker), or CPU pods holding every worker and the CPU teachers."""
    tc = config.train
    if tc.use_gpu:
        per_pod = pods.student_gpus_per_pod
        cpus = max(per_pod * pods.cpus_per_gpu, math.ceil(min(per_pod, tc.num_workers) * tc.cpus_per_worker))
        return Group("student-gpu", math.ceil(tc.num_workers / per_pod), per_pod, cpus,
                     per_pod * pods.memory_gib_per_gpu)
    cpus = math.ceil(tc.num_workers * tc.cpus_per_worker + sum(t.num_cpus * (1 if t.replicas == "auto" else
                                                                              t.replicas)
                                                               for t in config.teachers if t.num_gpus <= 0))
    return Group("cpu-workers", 1, 0, max(cpus, 4), max(16, 4 * cpus))


def groups(config: Config, pods: Pods) -> list[Group]:
    teachers = teacher_group(config, pods)
    return ([teachers] if teachers else []) + [student_group(config, pods)]


def _env() -> list[dict[str, Any]]:
    """Every Ray container's environment: token auth with the cluster's token, the HF token when its Secret is
    there (``optional``: public models need none). Values come from Secrets by reference, never inline."""
    return [{"name": "RAY_AUTH_MODE", "value": "token"},
            {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": TOKEN_KEY}}},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": HF_SECRET, "key": HF_KEY,
                                                                 "optional": True}}}]


def _template(container: str, image: str, cpus: int, memory_gib: int, gpus: int, claim: str,
              ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {"cpu": str(cpus), "memory": f"{memory_gib}Gi"}
    if gpus:
        resources[GPU] = str(gpus)
    spec: dict[str, Any] = {
        "containers": [{
            "name": container, "image": image, "imagePullPolicy": "IfNotPresent", "env": _env(),
            "resources": {"requests": dict(resources), "limits": dict(resources)},
            "volumeMounts": [{"name": "runs", "mountPath": RUNS_MOUNT}, {"name": "dshm", "mountPath": "/dev/shm"}],
            **({"ports": ports} if ports else {}),
        }],
        # the run directory on every pod; /dev/shm sized for Ray's object store (a container's default is 64 MiB)
        "volumes": [{"name": "runs", "persistentVolumeClaim": {"claimName": claim}},
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{max(2, memory_gib // 3)}Gi"}}],
    }
    if gpus:
        spec["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    return {"spec": spec}


def cluster_spec(config: Config, pods: Pods) -> dict[str, Any]:
    """``RayClusterSpec``: the head and the worker groups of ``groups``."""
    from importlib.metadata import version

    head = {"rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": _template("ray-head", pods.image, 8, 32, 0, pods.runs_claim,
                                  [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                                   {"containerPort": 10001, "name": "client"}])}
    workers = [{"groupName": g.name, "replicas": g.pods, "minReplicas": 0, "maxReplicas": g.pods,
                "rayStartParams": {},
                "template": _template("ray-worker", pods.image, g.cpus, g.memory_gib, g.gpus, pods.runs_claim)}
               for g in groups(config, pods)]
    return {"rayVersion": version("ray"), "enableInTreeAutoscaling": True,
            "autoscalerOptions": {"idleTimeoutSeconds": 300, "upscalingMode": "Default"},
            "headGroupSpec": head, "workerGroupSpecs": workers}


PROJECT = Path(__file__).resolve().parent.parent
HEADER = "# Written by `tinyllm k8s"  # the first line of every manifest written here (what --output may replace)


def cluster_config_path(config_path: Path, given: str | None = None) -> str:
    """Where the pods find the config: ``given`` (``--config-in-cluster``: on the run volume, say), else the same
    file in the image (``APP_DIR``), which holds the project's folder; a config outside it has no such copy."""
    if given:
        return given
    try:
        inside = config_path.resolve().relative_to(PROJECT)
    except ValueError:
        raise ConfigError(f"--config: {config_path} is outside the project, so the image has no copy of it; put it "
                          f"on the run volume (e.g. {RUNS_MOUNT}/configs/) and pass that path with "
                          f"--config-in-cluster") from None
    return f"{APP_DIR}/{inside.as_posix()}"


def entrypoint(config_in_cluster: str) -> str:
    """The job's command, as ``ray job submit`` runs it on the head."""
    return f"python {APP_DIR}/jobs/distill.py --config {config_in_cluster} --output-dir {RUNS_MOUNT}"


def manifest(config: Config, config_in_cluster: str, kind: str = "rayjob", pods: Pods = Pods()) -> dict[str, Any]:
    """The ``RayJob`` (or ``RayCluster``) of ``config`` as a dict; ``config_in_cluster``: its path in the pods."""
    if kind not in KINDS:
        raise ConfigError(f"--kind: {kind!r} is not one of {', '.join(KINDS)}")
    name = pods.name or f"tinyllm-{config.output.run_name}".lower().replace("_", "-").replace(".", "-")[:50].strip("-")
    meta = {"name": name, "labels": {"app.kubernetes.io/name": "tinyllm-ray"}}
    spec = cluster_spec(config, pods)
    if kind == "raycluster":
        return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": meta, "spec": spec}
    submitter = {"spec": {"restartPolicy": "Never", "containers": [{
        "name": "ray-job-submitter", "image": pods.image, "env": _env()[:2],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]}}
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": meta, "spec": {
        "entrypoint": entrypoint(config_in_cluster),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": 600,  # the cluster stays 10 minutes after the job, for its logs
        "submitterPodTemplate": submitter,
        "rayClusterSpec": spec}}


def to_yaml(document: dict[str, Any], command: str) -> str:
    head = (f"{HEADER} {command}` (the same options): write it again when the config changes.\n"
            f"# KubeRay >= {KUBERAY_VERSION} (ray.io/v1); docs/kubernetes.md.\n")
    return head + yaml.safe_dump(document, sort_keys=False, width=120)


def write(path: Path, text: str) -> None:
    """``text`` into ``path``, replacing only a file this command wrote (its first line is ``HEADER``)."""
    if path.exists():
        try:
            ours = path.is_file() and path.read_text(errors="replace").startswith(HEADER)
        except OSError:
            ours = False
        if not ours:
            raise ConfigError(f"--output: {path} exists and was not written by tinyllm k8s; choose another path")
    path.write_text(text)


def main(args: Any) -> int:
    """``tinyllm k8s``: the manifest on stdout (or ``--output``), or one ``error:`` line."""
    import sys

    from tinyllm_ray.config import load_config

    try:
        config = load_config(args.config, args.overrides, check_paths=False)
        pods = Pods(teacher_gpus_per_pod=args.teacher_gpus_per_pod, student_gpus_per_pod=args.student_gpus_per_pod,
                    auto_teacher_pods=args.teacher_pods, image=args.image, runs_claim=args.runs_claim,
                    name=args.name)
        where = cluster_config_path(Path(args.config), args.config_in_cluster)
        command = f"--config {args.config}" + (f" --kind {args.kind}" if args.kind != "rayjob" else "")
        text = to_yaml(manifest(config, where, args.kind, pods), command)
        if args.output:
            write(Path(args.output), text)
        else:
            print(text, end="")
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
