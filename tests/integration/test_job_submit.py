"""``ray job submit -- python jobs/distill.py`` against a ``ray start --head`` on loopback with token auth.

The head is started with ``--block`` as this test's own child process and stopped by signalling that
process (never ``ray stop``, which would kill every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.ray

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A token-protected single-node head on loopback: yields (dashboard address, env with the token,
    Prometheus metrics address)."""
    temp = Path("/tmp") / f"tinyllm-head-{secrets.token_hex(3)}"  # Ray's socket paths must stay short
    dashboard, metrics_port = _free_port(), _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(24),
           "HF_HUB_OFFLINE": "1", "RAY_DISABLE_USAGE_STATS": "1"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path_factory.mktemp("head") / "head.log", "w")
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={_free_port()}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2",
         f"--temp-dir={temp}", "--disable-usage-stats", f"--metrics-export-port={metrics_port}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        # Ready = a trivial job runs (the dashboard answers before its job agent is up).
        deadline = time.monotonic() + 180
        while subprocess.run([RAY, "job", "submit", "--address", address, "--", "python", "-c", "pass"],
                             env=env, capture_output=True, timeout=120).returncode != 0:
            assert proc.poll() is None, f"ray start exited: {proc.returncode}"
            assert time.monotonic() < deadline, "head did not accept a job in 180 s"
            time.sleep(2)
        yield address, env, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_submitted_job_succeeds_and_writes_report(head, tiny_models, tmp_path):
    address, env, _ = head
    models = tiny_models
    overrides = [
        f"tiny_models={models}", f"teachers.0.model={models}/teacher-a", f"teachers.1.model={models}/teacher-b",
        f"student.model={models}/student-t5", "data.n_train=32", "data.n_valid=8", "data.n_test=8",
        "train.epochs=1", "teachers.0.max_new_tokens=8", "teachers.1.max_new_tokens=8", "output.run_name=job",
    ]
    submission = f"tinyllm-test-{secrets.token_hex(4)}"
    cmd = [RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--submission-id", submission,
           "--", "python", "jobs/distill.py", "--output-dir", str(tmp_path)]
    for o in overrides:
        cmd += ["--set", o]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    # The job API, from a process that holds the cluster's token.
    query = ("import sys; from ray.job_submission import JobSubmissionClient as C; "
             "print(C(sys.argv[1]).get_job_status(sys.argv[2]).value)")
    status = subprocess.run([sys.executable, "-c", query, address, submission], env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.stdout.strip() == "SUCCEEDED", done.stdout[-4000:] + done.stderr[-4000:] + status.stderr
    report = json.loads((tmp_path / "job" / "report.json").read_text())
    assert [t["name"] for t in report["teachers"]] == ["teacher-a", "teacher-b"]
    assert report["student"]["steps"] == 2
    assert "valid accuracy" in done.stdout  # the summary table reaches the job's logs


def test_submission_without_the_token_is_refused(head):
    address, env, _ = head
    for bad in ({"RAY_AUTH_TOKEN": secrets.token_hex(24)}, {"RAY_AUTH_TOKEN": ""}):
        wrong = {**env, **bad}
        if not bad["RAY_AUTH_TOKEN"]:
            wrong = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
            wrong["HOME"] = "/nonexistent"  # no ~/.ray/auth_token either
        done = subprocess.run([RAY, "job", "submit", "--address", address, "--", "python", "-c", "print(1)"],
                              env=wrong, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert "Authentication" in done.stdout + done.stderr


def test_project_metrics_reach_prometheus(head):
    """After the job above, the teachers' rationale counter is in the head's Prometheus text (Ray exports
    every few seconds, so poll). Gauges of processes that have exited are dropped by Ray's exporter, so only
    the counter can be checked once the job is over."""
    _, _, metrics_url = head
    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
        if "ray_tinyllm_teacher_rationales" in text:
            break
        time.sleep(3)
    lines = [line for line in text.splitlines() if line.startswith("ray_tinyllm_teacher_rationales")]
    assert any('teacher="teacher-a"' in line and 'outcome=' in line for line in lines), lines or text[-2000:]
