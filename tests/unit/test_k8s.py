"""The KubeRay manifests (``tinyllm k8s``, ``k8s/``): they parse, their pods are valid Kubernetes core/v1 pod
templates (lightkube's models of the Kubernetes API), their RayJob/RayCluster fields are KubeRay's, every preset's
worker groups hold what its teachers and student ask for, and secrets are referenced, never inline (no cluster)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO
from tinyllm_ray import k8s, resources
from tinyllm_ray.cli import main
from tinyllm_ray.config import ConfigError, load_config

lightkube = pytest.importorskip("lightkube.models.core_v1")  # the test extra installs it; CI has it

PRESETS = sorted(p for d in ("paper", "modern") for p in (REPO / "configs" / d).glob("*.yaml")
                 if not p.name.startswith("_"))

# KubeRay's ray.io/v1 fields (ray-operator/apis/ray/v1/rayjob_types.go and raycluster_types.go, KubeRay v1.4):
# name -> type, where a type is a Python type, "pod" (a core/v1 PodTemplateSpec), a nested schema (dict) or a
# one-item list of one. Keys without ``omitempty`` in KubeRay's JSON tags are required (REQUIRED).
STR_MAP = "str-map"
AUTOSCALER = {"resources": dict, "image": str, "imagePullPolicy": str, "env": list, "envFrom": list,
              "volumeMounts": list, "securityContext": dict, "idleTimeoutSeconds": int, "upscalingMode": str}
HEAD = {"serviceType": str, "headService": dict, "enableIngress": bool, "rayStartParams": STR_MAP, "template": "pod"}
WORKER = {"groupName": str, "replicas": int, "minReplicas": int, "maxReplicas": int, "numOfHosts": int,
          "rayStartParams": STR_MAP, "template": "pod", "scaleStrategy": dict}
CLUSTER = {"headGroupSpec": HEAD, "workerGroupSpecs": [WORKER], "rayVersion": str, "enableInTreeAutoscaling": bool,
           "autoscalerOptions": AUTOSCALER, "headServiceAnnotations": STR_MAP, "suspend": bool}
JOB = {"activeDeadlineSeconds": int, "backoffLimit": int, "rayClusterSpec": CLUSTER, "submitterPodTemplate": "pod",
       "metadata": STR_MAP, "clusterSelector": STR_MAP, "submitterConfig": {"backoffLimit": int}, "managedBy": str,
       "entrypoint": str, "runtimeEnvYAML": str, "jobId": str, "submissionMode": str, "entrypointResources": str,
       "entrypointNumCpus": float, "entrypointNumGpus": float, "ttlSecondsAfterFinished": int,
       "shutdownAfterJobFinishes": bool, "suspend": bool}
REQUIRED = {id(HEAD): {"rayStartParams", "template"},
            id(WORKER): {"groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"},
            id(CLUSTER): {"headGroupSpec"}}
UPSCALING = {"Default", "Aggressive", "Conservative"}


def kuberay_problems(schema: dict, value: Any, path: str, pods: list[tuple[str, dict]]) -> list[str]:
    """Keys KubeRay does not define, values of the wrong type, required keys missing; pod templates collected."""
    if not isinstance(value, dict):
        return [f"{path}: expected an object"]
    out = [f"{path}.{k}: not a KubeRay field" for k in value if k not in schema]
    out += [f"{path}.{k}: required" for k in REQUIRED.get(id(schema), ()) if k not in value]
    for key, kind in schema.items():
        if key not in value:
            continue
        v, where = value[key], f"{path}.{key}"
        if kind == "pod":
            pods.append((where, v))
        elif kind == STR_MAP:
            if not (isinstance(v, dict) and all(isinstance(x, str) for x in v.values())):
                out.append(f"{where}: a map of strings")
        elif isinstance(kind, dict):
            out += kuberay_problems(kind, v, where, pods)
        elif isinstance(kind, list):
            out += [p for i, item in enumerate(v) for p in kuberay_problems(kind[0], item, f"{where}[{i}]", pods)]
        elif kind is float:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                out.append(f"{where}: a number")
        elif not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            out.append(f"{where}: a {kind.__name__}")
    return out


def unknown_keys(model: type, data: Any, path: str) -> list[str]:
    """Keys of ``data`` that Kubernetes' model ``model`` (lightkube: the API's own field names) does not have,
    at any depth: lightkube's ``from_dict`` checks types and required fields but drops unknown keys."""
    if not isinstance(data, dict):
        return []
    hints = typing.get_type_hints(model)
    out = []
    for key, value in data.items():
        if key not in hints:
            out.append(f"{path}.{key}")
            continue
        out += _walk(hints[key], value, f"{path}.{key}")
    return out


def _walk(kind: Any, value: Any, path: str) -> list[str]:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:
        return _walk(next(a for a in args if a is not type(None)), value, path)
    if origin in (list, typing.List) and isinstance(value, list):  # noqa: UP006
        return [p for i, item in enumerate(value) for p in _walk(args[0], item, f"{path}[{i}]")]
    if isinstance(kind, type) and hasattr(kind, "from_dict"):
        return unknown_keys(kind, value, path)
    return []


def pod_problems(path: str, template: dict) -> list[str]:
    out = [f"{p}: not a Kubernetes field" for p in unknown_keys(lightkube.PodTemplateSpec, template, path)]
    try:
        lightkube.PodTemplateSpec.from_dict(template)
    except Exception as err:  # noqa: BLE001 -- lightkube's validation error, reported with its path
        out.append(f"{path}: {err}")
    return out


def manifest_problems(document: dict) -> list[str]:
    pods: list[tuple[str, dict]] = []
    spec = JOB if document["kind"] == "RayJob" else CLUSTER
    out = kuberay_problems(spec, document.get("spec"), "spec", pods)
    if document.get("apiVersion") != "ray.io/v1":
        out.append(f"apiVersion: {document.get('apiVersion')!r}")
    upscaling = (document["spec"].get("rayClusterSpec", document["spec"]).get("autoscalerOptions") or {}).get(
        "upscalingMode")
    if upscaling is not None and upscaling not in UPSCALING:
        out.append(f"upscalingMode: {upscaling!r}")
    return out + [p for where, pod in pods for p in pod_problems(where, pod)]


def generated(config_path: Path, kind: str = "rayjob", **pods: Any) -> dict:
    config = load_config(config_path, check_paths=False)
    return k8s.manifest(config, k8s.cluster_config_path(config_path), kind, k8s.Pods(**pods))


# --- the committed manifests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["rayjob.yaml", "raycluster.yaml", "pvc.yaml"])
def test_the_committed_manifests_parse_and_are_valid(name: str) -> None:
    document = yaml.safe_load((REPO / "k8s" / name).read_text())
    if document["kind"] == "PersistentVolumeClaim":
        from lightkube.models.core_v1 import PersistentVolumeClaimSpec

        assert unknown_keys(PersistentVolumeClaimSpec, document["spec"], "spec") == []
        assert PersistentVolumeClaimSpec.from_dict(document["spec"]).accessModes == ["ReadWriteMany"]
        return
    assert manifest_problems(document) == []


@pytest.mark.parametrize(("name", "kind"), [("rayjob.yaml", "rayjob"), ("raycluster.yaml", "raycluster")])
def test_the_committed_manifests_are_what_the_command_writes_for_their_config(name: str, kind: str) -> None:
    """k8s/ and the generator cannot drift: the files are ``tinyllm k8s --config configs/paper/obqa.yaml``'s."""
    text = (REPO / "k8s" / name).read_text()
    assert yaml.safe_load(text) == generated(Path("configs/paper/obqa.yaml"), kind)
    assert text.startswith(k8s.HEADER)


def test_the_checks_catch_what_they_are_there_to_catch() -> None:
    document = generated(REPO / "configs/paper/obqa.yaml")
    worker = document["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    worker["maxReplica"] = 2  # a misspelt KubeRay field
    worker["rayStartParams"] = {"num-gpus": 4}  # not a string
    container = worker["template"]["spec"]["containers"][0]
    container["resource"] = {}  # a misspelt Kubernetes field
    container["ports"] = [{"containerPort": "http"}]  # not an int
    problems = "\n".join(manifest_problems(document))
    for expected in ("maxReplica: not a KubeRay field", "rayStartParams: a map of strings",
                     "containers[0].resource: not a Kubernetes field", "containerPort"):
        assert expected in problems, problems


# --- every preset ---------------------------------------------------------------------------------------------

def nodes_of(document: dict) -> list[resources.NodeType]:
    """The Ray nodes a manifest's pods make: the head (no CPUs for work: num-cpus 0) and each worker group."""
    spec = document["spec"].get("rayClusterSpec", document["spec"])
    out = [resources.NodeType("head", {"CPU": float(spec["headGroupSpec"]["rayStartParams"]["num-cpus"])})]
    for group in spec["workerGroupSpecs"]:
        asked = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        out.append(resources.NodeType(group["groupName"], {"CPU": float(asked["cpu"]),
                                                           "GPU": float(asked.get(k8s.GPU, 0))},
                                      max_count=group["maxReplicas"]))
    return out


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_presets_rayjob_holds_its_teachers_and_student(preset: Path) -> None:
    """The worker groups offer what the run asks for: every teacher replica (``replicas: auto`` resolved on the
    groups' GPUs, as the job does when it starts), the Train workers and the evaluation actors fit, checked by
    the same ``resources.problems`` the job runs before its first actor."""
    document = generated(preset.relative_to(REPO))
    assert manifest_problems(document) == []
    nodes = nodes_of(document)
    capacity = {r: sum(n.resources.get(r, 0.0) * n.max_count for n in nodes) for r in ("CPU", "GPU")}
    config = resources.resolve_replicas(load_config(preset, check_paths=False), capacity, nodes)
    assert resources.problems(resources.demands(config), nodes) == []
    groups = {n.name: n for n in nodes}
    with_gpus = [t for t in config.teachers if t.num_gpus > 0]
    if with_gpus:  # a pod holds a replica of each; ``auto`` teachers then take every GPU (teacher and student pods)
        assert groups["teacher-gpu"].resources["GPU"] >= max(t.num_gpus for t in with_gpus)
        assert all(t.replicas >= 1 for t in with_gpus)
    if config.train.use_gpu:
        student = groups["student-gpu"]
        assert student.resources["GPU"] * student.max_count >= config.train.num_workers


def test_a_teacher_larger_than_a_pod_is_refused_with_its_key(tmp_path: Path) -> None:
    config = load_config(REPO / "configs/paper/obqa.yaml", ["teachers.0.num_gpus=8"], check_paths=False)
    with pytest.raises(ConfigError, match=r"teachers\.0\.num_gpus: 8 GPUs per replica do not fit in a pod of 4"):
        k8s.manifest(config, "/x.yaml")
    bigger = k8s.manifest(config, "/x.yaml", pods=k8s.Pods(teacher_gpus_per_pod=8))
    assert manifest_problems(bigger) == []


def test_fixed_replicas_get_whole_pods() -> None:
    config = load_config(REPO / "configs/paper/obqa.yaml", ["teachers.0.replicas=3", "teachers.0.num_gpus=2",
                                                            "teachers.1.replicas=1"], check_paths=False)
    teacher = k8s.teacher_group(config, k8s.Pods())
    # teacher 0: 3 replicas of 2 GPUs, 2 a pod of 4 -> 2 pods; teacher 1: 1 replica of 1 GPU -> 1 pod
    assert (teacher.pods, teacher.gpus) == (3, 4)


# --- secrets --------------------------------------------------------------------------------------------------

def envs(document: Any) -> list[dict]:
    if isinstance(document, dict):
        found = list(document["env"]) if isinstance(document.get("env"), list) else []
        return found + [e for v in document.values() for e in envs(v)]
    if isinstance(document, list):
        return [e for v in document for e in envs(v)]
    return []


@pytest.mark.parametrize("kind", ["rayjob", "raycluster"])
def test_secrets_are_referenced_never_inline(kind: str) -> None:
    document = generated(Path("configs/paper/obqa.yaml"), kind)
    found = envs(document)
    secret = [e for e in found if any(w in e["name"] for w in ("TOKEN", "SECRET", "KEY", "PASSWORD"))]
    assert {e["name"] for e in secret} == {"RAY_AUTH_TOKEN", "HF_TOKEN"}
    assert all("value" not in e and "secretKeyRef" in e["valueFrom"] for e in secret)
    modes = [e for e in found if e["name"] == "RAY_AUTH_MODE"]
    # head, two worker groups and (RayJob) the submitter
    assert len(modes) == (4 if kind == "rayjob" else 3) and all(e["value"] == "token" for e in modes)
    text = yaml.safe_dump(document)
    assert "kind: Secret" not in text and "stringData" not in text


# --- the command ---------------------------------------------------------------------------------------------

def test_the_command_writes_stdout_and_refuses_a_foreign_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["k8s", "--config", str(REPO / "configs/paper/obqa.yaml")]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)["kind"] == "RayJob"
    mine = tmp_path / "job.yaml"
    assert main(["k8s", "--config", str(REPO / "configs/paper/obqa.yaml"), "--output", str(mine)]) == 0
    assert main(["k8s", "--config", str(REPO / "configs/paper/obqa.yaml"), "--output", str(mine)]) == 0  # its own
    theirs = tmp_path / "theirs.yaml"
    theirs.write_text("kind: Deployment\n")
    assert main(["k8s", "--config", str(REPO / "configs/paper/obqa.yaml"), "--output", str(theirs)]) == 2
    assert theirs.read_text() == "kind: Deployment\n"
    assert "was not written by tinyllm k8s" in capsys.readouterr().err


def test_a_config_outside_the_project_needs_its_path_in_the_cluster(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    outside = tmp_path / "mine.yaml"
    base = f"extends: {REPO}/configs/paper/_base.yaml"
    outside.write_text((REPO / "configs/paper/obqa.yaml").read_text().replace("extends: _base.yaml", base))
    assert main(["k8s", "--config", str(outside)]) == 2
    assert "--config-in-cluster" in capsys.readouterr().err
    assert main(["k8s", "--config", str(outside), "--config-in-cluster", "/mnt/runs/configs/mine.yaml"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert "--config /mnt/runs/configs/mine.yaml --output-dir /mnt/runs" in job["spec"]["entrypoint"]
