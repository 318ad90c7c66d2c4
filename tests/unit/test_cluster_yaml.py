"""cluster.yaml (AWS) and cluster-gcp.yaml pass Ray's own cluster-config validation and keep the promises their
headers make; the GCP file's declared node resources are what the driver's fit check reads."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

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


# --- Hardening (issue #16): tokens 0600 on every node, SSH from one range to the head only, no public workers.

TOKEN = "~/.ray/auth_token"
HF_TOKEN = "~/.cache/huggingface/token"
WORKERS = ("teacher_gpu", "student_gpu")


def _header(path: Path) -> str:
    lines = path.read_text().splitlines()
    return "\n".join(lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))])


class _Node:
    """Provider and command runner of one node for Ray's NodeUpdater: records what it syncs and runs."""

    def __init__(self):
        self.events: list[tuple[str, str]] = []

    def get_command_runner(self, *args, **kwargs):
        return self

    def node_tags(self, node_id):
        return {}

    def set_node_tags(self, node_id, tags):
        pass

    def is_terminated(self, node_id):
        return False

    def run(self, cmd, **kwargs):
        self.events.append(("run", cmd))

    def run_rsync_up(self, source, target, options=None):
        self.events.append(("sync", target))

    def run_init(self, **kwargs):
        return False


@pytest.mark.parametrize("node", ["head", "head --restart-only", "worker"])
def test_tokens_end_0600_on_every_node_after_the_file_mounts(cluster, node, tmp_path):
    """Ray's own NodeUpdater (what `ray up` runs for the head, the autoscaler for each worker) with a recording
    node: the token is synced, then chmod 600, then Ray starts; `--restart-only` keeps it. The commands, run in
    bash on a home whose tokens are 0644, leave both 0600, and pass without the optional Hugging Face token."""
    from ray.autoscaler._private.updater import NodeUpdater
    from ray.autoscaler._private.util import prepare_config

    config = prepare_config(cluster)
    # No node type replaces the global initialization_commands (autoscaler.py's _get_node_type_specific_fields).
    assert all("initialization_commands" not in t for t in config["available_node_types"].values())
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (tmp_path / "token").write_text("t")
    local = {"/home/ubuntu/tinyllm_ray": str(checkout), "/home/ubuntu/.ray/auth_token": str(tmp_path / "token")}
    assert set(config["file_mounts"]) == set(local)
    head = node.startswith("head")
    recorder = _Node()
    NodeUpdater(
        node_id=node, provider_config={"type": "recorded"}, provider=recorder, auth_config={}, cluster_name="t",
        file_mounts=local, initialization_commands=config["initialization_commands"],
        setup_commands=config["head_setup_commands" if head else "worker_setup_commands"],
        ray_start_commands=config["head_start_ray_commands" if head else "worker_start_ray_commands"],
        runtime_hash="new", file_mounts_contents_hash="new", is_head_node=head,
        restart_only=node.endswith("--restart-only"),
    ).do_update()
    events = recorder.events
    synced = events.index(("sync", "/home/ubuntu/.ray/auth_token"))
    started = next(i for i, (kind, cmd) in enumerate(events) if kind == "run" and "ray start" in cmd)
    for token in (TOKEN, HF_TOKEN):
        chmod = [i for i, (kind, cmd) in enumerate(events) if kind == "run" and f"chmod 600 {token}" in cmd]
        assert chmod and synced < chmod[0] < started, (token, events)

    home = tmp_path / "home"
    for with_hf in (True, False):
        for name in (TOKEN, HF_TOKEN):
            target = home / name.removeprefix("~/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            if with_hf or name == TOKEN:
                target.write_text("t")
                target.chmod(0o644)
        for cmd in config["initialization_commands"]:
            subprocess.run(["bash", "-c", cmd], env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, check=True)
        assert (home / TOKEN[2:]).stat().st_mode & 0o777 == 0o600
        assert not with_hf or (home / HF_TOKEN[2:]).stat().st_mode & 0o777 == 0o600


def test_workers_have_no_public_ip(cluster, path):
    types = cluster["available_node_types"]
    provider = cluster["provider"]
    # Workers reached over the VPC (the autoscaler on the head always does), the head over its public address
    # (ray/autoscaler/_private/updater.py NodeUpdater.__init__, commands.py get_head_node_ip).
    assert provider.get("use_internal_ips") is True and provider.get("use_external_head_ip") is True
    if provider["type"] == "aws":
        for name in WORKERS:
            (nic,) = types[name]["node_config"]["NetworkInterfaces"]
            assert nic["AssociatePublicIpAddress"] is False and nic["SubnetId"] and nic["DeviceIndex"] == 0
        (nic,) = types["head"]["node_config"]["NetworkInterfaces"]
        assert nic["AssociatePublicIpAddress"] is True
    else:
        # Every node type names its interface, so Ray's _configure_subnet adds none (its default has an external
        # ONE_TO_ONE_NAT access config); the workers' has no accessConfigs: no external IP.
        for name in WORKERS:
            (nic,) = types[name]["node_config"]["networkInterfaces"]
            assert nic["subnetwork"] and not nic.get("accessConfigs")
        (nic,) = types["head"]["node_config"]["networkInterfaces"]
        assert [c["type"] for c in nic["accessConfigs"]] == ["ONE_TO_ONE_NAT"]
        subnets = {t["node_config"]["networkInterfaces"][0]["subnetwork"] for t in types.values()}
        assert subnets == {nic["subnetwork"]}


def test_ssh_reaches_only_the_head_and_only_from_ssh_cidr(cluster, path):
    header = _header(path).replace("\\\n#", "")  # shell lines continued with a backslash, joined
    (cidr,) = re.findall(r'^#\s+SSH_CIDR=("[^"]*"|\S+)', header, re.MULTILINE)
    assert cidr.endswith('/32"') and "0.0.0.0/0" not in cidr and "::/0" not in cidr  # one address by default
    types = cluster["available_node_types"]
    if cluster["provider"]["type"] == "aws":
        # Ray's own group (made when a node type names none) opens 22 to 0.0.0.0/0 whatever
        # provider.security_group adds (ray/autoscaler/_private/aws/config.py, _create_default_inbound_rules);
        # it makes none when every node type names one: so every interface names the group the header makes.
        assert "security_group" not in cluster["provider"]
        assert re.search(r'authorize-security-group-ingress --group-id "\$SG" --protocol tcp --port 22 '
                         r'--cidr "\$SSH_CIDR"', header)
        groups = set()
        for t in types.values():
            assert not {"SecurityGroupIds", "SubnetIds", "SubnetId"} & set(t["node_config"])
            for nic in t["node_config"]["NetworkInterfaces"]:
                assert nic["Groups"]
                groups.update(nic["Groups"])
        assert len(groups) == 1
    else:
        # Ray's GCP provider makes no firewall rules (ray/autoscaler/_private/gcp/config.py): the header's rule
        # lets SSH_CIDR reach port 22 of the nodes tagged like the head, and only the head has that tag.
        (tag,) = re.findall(r'firewall-rules create \S+ .*--allow tcp:22 --source-ranges "\$SSH_CIDR" '
                            r'--target-tags (\S+)', header)
        assert "firewall-rules delete default-allow-ssh" in header
        assert tag in types["head"]["node_config"]["tags"]["items"]
        assert all(tag not in types[n]["node_config"].get("tags", {}).get("items", []) for n in WORKERS)


def test_torch_requirement_excludes_releases_with_cve_2025_32434():
    """torch.load(weights_only=True) could still run code before torch 2.6.0 (CVE-2025-32434)."""
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch,) = [r for r in map(Requirement, deps) if r.name == "torch"]
    assert torch.specifier.contains("2.6.0") and torch.specifier.contains("2.13.0")
    assert not torch.specifier.contains("2.5.1") and not torch.specifier.contains("2.4.0")
