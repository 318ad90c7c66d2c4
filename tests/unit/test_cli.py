"""The entry points fail on bad input with one ``error:`` line naming the key, no traceback, no Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO


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


def _inspect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyllm_ray.cli", "data", "inspect", *args],
                          capture_output=True, text=True, timeout=120)


def test_data_inspect_prints_one_json_object(tmp_path):
    import json

    rows = [{"q": "2+2?", "opts": ["3", "4"], "label": 1}, {"q": "Sky?", "opts": ["blue", "red", "green"],
            "label": "A"}, {"q": "", "opts": ["x", "y"], "label": 0}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    done = _inspect("--dataset", "mine", "--path", str(tmp_path), "--columns", "question=q,choices=opts,answer=label")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["format"] == "jsonl"
    assert out["splits"] == {"train": {"rows": 3, "rejected": 1, "choices": {"2": 1, "3": 1}}}
    assert out["reject_reasons"] == {"empty 'q'": 1}  # the user's own column name


def test_data_inspect_errors_are_one_line(tmp_path):
    done = _inspect("--dataset", "mystery", "--path", str(tmp_path))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "data.format" in done.stderr
    (tmp_path / "x_train.json").write_text('[{"id": "a", "question": "q", "choices": ["a", "b"], "ans')
    done = _inspect("--dataset", "x", "--path", str(tmp_path))
    assert done.returncode == 2 and "x_train.json" in done.stderr and "truncated" in done.stderr
    assert "Traceback" not in done.stderr
