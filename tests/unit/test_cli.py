"""The entry points fail on bad input with one ``error:`` line naming the key, no traceback, no Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def _distill(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "jobs" / "distill.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["train.gamma=-1", "train.epochz=3"], ["train.gamma", "train.epochz: unknown key"]),
        (["train.alpha.teacher-c=1"], ["train.alpha.teacher-c"]),
        (["teachers.0.model=./no/such/model", "tiny_models=null"], ["teachers.0.model", "does not exist"]),
        (["teachers.0.shots=300"], ["teachers.0.shots"]),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, overrides, names):
    args = ["--output-dir", str(tmp_path)]
    for o in overrides:
        args += ["--set", o]
    done = _distill(*args)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    for name in names:
        assert name in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "Started a local Ray instance" not in done.stderr + done.stdout


def test_missing_config_file(tmp_path):
    done = _distill("--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "config file not found" in done.stderr


def test_tiny_models_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tinyllm_ray.cli", "tiny-models", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("teacher-a", "teacher-b", "student-t5"):
        assert (tmp_path / "m" / name / "config.json").is_file()
