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
    done = subprocess.run([sys.executable, "-m", "tinyllm_ray.cli", "tiny-models", str(tmp_path / "m"), "--random-only"],
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
    assert out["splits"] == {"train": {"rows": 3, "rejected": 1, "choices": {"2": 1, "3": 1}, "unlabelled": False}}
    assert out["reject_reasons"] == {"empty 'q'": 1}  # the user's own column name


def test_data_inspect_errors_are_one_line(tmp_path):
    done = _inspect("--dataset", "mystery", "--path", str(tmp_path))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "data.format" in done.stderr
    (tmp_path / "x_train.json").write_text('[{"id": "a", "question": "q", "choices": ["a", "b"], "ans')
    done = _inspect("--dataset", "x", "--path", str(tmp_path))
    assert done.returncode == 2 and "x_train.json" in done.stderr and "truncated" in done.stderr
    assert "Traceback" not in done.stderr


# --- tinyllm config: the resolved config as YAML ------------------------------------------------------------

CONFIGS = REPO / "configs"


def _config(capsys, *args: str) -> tuple[int, str, str]:
    from tinyllm_ray.cli import main

    code = main(["config", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _reload(text: str, tmp_path):
    from tinyllm_ray.config import load_config

    (tmp_path / "printed.yaml").write_text(text)
    return load_config(tmp_path / "printed.yaml", check_paths=False)


def test_config_prints_the_resolved_paper_preset(capsys, tmp_path):
    import dataclasses

    import yaml

    from tinyllm_ray.config import Config, TrainConfig, load_config

    code, out, err = _config(capsys, str(CONFIGS / "paper" / "obqa.yaml"))
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert [t["name"] for t in printed["teachers"]] == ["flan-t5-xl", "llama-2-chat"]  # extends applied
    train = printed["train"]
    assert (train["lr"], train["max_steps"], train["batch_size"], train["grad_accum_steps"]) == (5e-5, 10000, 8, 8)
    assert printed["data"]["dataset"] == "obqa" and printed["output"]["run_name"] == "obqa-flan-t5-base"
    assert printed["train"]["shuffle"] == "local" and printed["compare"] is False  # defaults filled in
    # every key, in the schema's order
    assert list(printed) == [f.name for f in dataclasses.fields(Config)]
    assert list(train) == [f.name for f in dataclasses.fields(TrainConfig)]
    # and it loads back as the same config
    assert _reload(out, tmp_path) == load_config(CONFIGS / "paper" / "obqa.yaml", check_paths=False)


def test_config_applies_set_overrides(capsys, tmp_path):
    import yaml

    from tinyllm_ray.config import load_config

    sets = ["train.lr=1e-4", "teachers.1.num_gpus=2", "train.max_steps=null", "compare=true"]
    args = [a for s in sets for a in ("--set", s)]
    code, out, err = _config(capsys, str(CONFIGS / "paper" / "arc.yaml"), *args)
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["train"]["lr"] == 1e-4 and printed["train"]["max_steps"] is None
    assert printed["teachers"][1]["num_gpus"] == 2 and printed["compare"] is True
    assert _reload(out, tmp_path) == load_config(CONFIGS / "paper" / "arc.yaml", sets, check_paths=False)


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_output_of_every_preset_loads_back_equal(capsys, tmp_path, path):
    from tinyllm_ray.config import load_config

    code, out, err = _config(capsys, str(path))
    assert code == 0, err
    assert _reload(out, tmp_path) == load_config(path, check_paths=False)


def test_config_bad_key_is_one_error_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tinyllm_ray.cli", "config", str(CONFIGS / "paper" / "obqa.yaml"),
                           "--set", "train.max_stepz=5", "--set", "train.max_steps=0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: ")
    assert "train.max_stepz: unknown key" in done.stderr and "train.max_steps" in done.stderr
    assert "Traceback" not in done.stderr
    missing = subprocess.run([sys.executable, "-m", "tinyllm_ray.cli", "config", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error: config file not found")
