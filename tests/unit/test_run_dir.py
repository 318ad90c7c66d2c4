"""Unit tests for prepare.prepare / open_run_dir: everything that runs before Ray, with no Ray at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from tinyllm_ray import prepare
from tinyllm_ray.config import Config, ConfigError, apply_override, from_dict

N_TRAIN = 16


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the configs' ``tiny_models`` build goes; built once, reused (idempotent) by every prepare."""
    return tmp_path_factory.mktemp("tiny") / "models"


@pytest.fixture(autouse=True, scope="module")
def ray_was_running() -> Any:
    """Whether Ray was already up when this module started (another test file's cluster); if not, no
    test here may start it."""
    before = ray.is_initialized()
    yield before
    if not before:
        assert not ray.is_initialized(), "prepare must not start Ray"


def make_config(tiny_dir: Path, out_dir: Path, *overrides: str) -> Config:
    raw: dict[str, Any] = {
        "tiny_models": str(tiny_dir),
        "data": {"dataset": "synthetic", "n_train": N_TRAIN, "n_valid": 4, "n_test": 4, "seed": 0},
        "teachers": [
            {"name": "teacher-a", "model": str(tiny_dir / "teacher-a"), "shots": 2},
            {"name": "teacher-b", "model": str(tiny_dir / "teacher-b"), "shots": 1},
        ],
        "student": {"model": str(tiny_dir / "student-t5"), "max_input_tokens": 64},
        "train": {"gamma": 1.0, "alpha": {"teacher-a": 0.5}, "epochs": 1},
        "output": {"dir": str(out_dir), "run_name": "run"},
    }
    for assignment in overrides:
        apply_override(raw, assignment)
    return from_dict(raw)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def test_prepare_creates_run_dir(tiny_dir: Path, out_dir: Path) -> None:
    config = make_config(tiny_dir, out_dir)
    p = prepare.prepare(config)
    assert p.run_dir == out_dir / "run"
    assert p.run_dir.is_dir()
    saved = p.run_dir / "config.yaml"
    assert saved.is_file()
    assert yaml.safe_load(saved.read_text()) == p.config.to_dict()
    assert from_dict(yaml.safe_load(saved.read_text())) == p.config
    # the tiny models were built where the config asked, and paths are absolute in the prepared config
    assert (tiny_dir / "student-t5" / "config.json").is_file()
    assert Path(p.config.student.model).is_absolute()
    assert [len(p.splits[s]) for s in ("train", "valid", "test")] == [N_TRAIN, 4, 4]


def test_prepare_relative_output_dir_is_made_absolute(tiny_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    p = prepare.prepare(make_config(tiny_dir, Path("rel-runs")))
    assert p.run_dir == (tmp_path / "rel-runs" / "run").resolve()
    assert p.run_dir.is_absolute() and (p.run_dir / "config.yaml").is_file()
    assert p.config.output.dir == str((tmp_path / "rel-runs").resolve())


def test_prepare_resumes_same_config(tiny_dir: Path, out_dir: Path) -> None:
    config = make_config(tiny_dir, out_dir)
    first = prepare.prepare(config)
    (first.run_dir / "teachers").mkdir()  # a finished stage's output must survive the resume
    second = prepare.prepare(make_config(tiny_dir, out_dir))
    assert second.run_dir == first.run_dir
    assert (second.run_dir / "teachers").is_dir()
    assert sorted(p.name for p in out_dir.iterdir()) == ["run"]


@pytest.mark.parametrize(
    ("change", "key"),
    [("train.epochs=2", "train.epochs"), ("data.n_train=20", "data.n_train"),
     ("student.max_input_tokens=32", "student.max_input_tokens"), ("teachers.1.shots=3", "teachers")],
)
def test_prepare_refuses_a_different_config(tiny_dir: Path, out_dir: Path, change: str, key: str) -> None:
    prepare.prepare(make_config(tiny_dir, out_dir))
    saved = (out_dir / "run" / "config.yaml").read_text()
    with pytest.raises(ConfigError) as info:
        prepare.prepare(make_config(tiny_dir, out_dir, change))
    msg = str(info.value)
    assert msg.startswith("output.run_name:")
    assert key in msg.split("differs at:")[1]
    # the saved config of the existing run is left alone
    assert (out_dir / "run" / "config.yaml").read_text() == saved


@pytest.mark.parametrize(
    "change", ["ray.num_cpus=2", "ray.address=auto", "output.if_exists=resume"],
)
def test_prepare_resumes_when_only_ray_or_output_differs(tiny_dir: Path, out_dir: Path, change: str) -> None:
    first = prepare.prepare(make_config(tiny_dir, out_dir, "output.if_exists=error"))
    second = prepare.prepare(make_config(tiny_dir, out_dir, change))
    assert second.run_dir == first.run_dir


def test_if_exists_new(tiny_dir: Path, out_dir: Path) -> None:
    first = prepare.prepare(make_config(tiny_dir, out_dir))
    second = prepare.prepare(make_config(tiny_dir, out_dir, "output.if_exists=new"))
    third = prepare.prepare(make_config(tiny_dir, out_dir, "output.if_exists=new", "train.epochs=2"))
    assert first.run_dir == out_dir / "run"
    assert second.run_dir == out_dir / "run-2"
    assert third.run_dir == out_dir / "run-3"
    for p in (second, third):
        assert yaml.safe_load((p.run_dir / "config.yaml").read_text()) == p.config.to_dict()


def test_if_exists_new_on_a_fresh_name(tiny_dir: Path, out_dir: Path) -> None:
    p = prepare.prepare(make_config(tiny_dir, out_dir, "output.if_exists=new"))
    assert p.run_dir == out_dir / "run"


def test_if_exists_error(tiny_dir: Path, out_dir: Path) -> None:
    prepare.prepare(make_config(tiny_dir, out_dir, "output.if_exists=error"))  # fresh: fine
    with pytest.raises(ConfigError, match="output.run_name") as info:
        prepare.prepare(make_config(tiny_dir, out_dir, "output.if_exists=error"))
    assert "already exists" in str(info.value)


def test_existing_non_run_directory_with_files(tiny_dir: Path, out_dir: Path) -> None:
    (out_dir / "run").mkdir(parents=True)
    (out_dir / "run" / "notes.txt").write_text("my own files")
    with pytest.raises(ConfigError, match="output.run_name") as info:
        prepare.prepare(make_config(tiny_dir, out_dir))
    assert "was not created by tinyllm" in str(info.value)
    assert not (out_dir / "run" / "config.yaml").exists()
    assert (out_dir / "run" / "notes.txt").read_text() == "my own files"


@pytest.mark.parametrize("content", ["", "- not\n- a mapping\n"])
def test_unreadable_saved_config_is_a_config_error(tiny_dir: Path, out_dir: Path, content: str) -> None:
    (out_dir / "run").mkdir(parents=True)
    (out_dir / "run" / "config.yaml").write_text(content)
    with pytest.raises(ConfigError, match="output.run_name"):
        prepare.prepare(make_config(tiny_dir, out_dir))


def test_existing_empty_directory_is_used(tiny_dir: Path, out_dir: Path) -> None:
    (out_dir / "run").mkdir(parents=True)
    p = prepare.prepare(make_config(tiny_dir, out_dir))
    assert (p.run_dir / "config.yaml").is_file()


def test_unwritable_output_dir(tiny_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as info:
        prepare.prepare(make_config(tiny_dir, blocker / "runs"))
    assert str(info.value).startswith("output.dir:")
    assert blocker.read_text() == "not a directory"


def test_too_many_shots_fails_before_anything(tiny_dir: Path, out_dir: Path, ray_was_running: bool) -> None:
    config = make_config(tiny_dir, out_dir, f"teachers.1.shots={N_TRAIN}")
    with pytest.raises(ConfigError) as info:
        prepare.prepare(config)
    assert "teachers.1.shots" in str(info.value)
    assert "teachers.0.shots" not in str(info.value)
    assert not out_dir.exists()
    assert ray.is_initialized() == ray_was_running


def test_most_shots_allowed(tiny_dir: Path, out_dir: Path) -> None:
    p = prepare.prepare(make_config(tiny_dir, out_dir, f"teachers.0.shots={N_TRAIN - 1}"))
    assert p.config.teachers[0].shots == N_TRAIN - 1


def test_invalid_cross_field_config_fails_before_run_dir(tiny_dir: Path, out_dir: Path) -> None:
    config = make_config(tiny_dir, out_dir, "train.alpha={ghost: 1.0}")
    with pytest.raises(ConfigError, match=r"train\.alpha\.ghost"):
        prepare.prepare(config)
    assert not out_dir.exists()


def test_missing_model_dir_fails(tiny_dir: Path, out_dir: Path, tmp_path: Path) -> None:
    config = make_config(tiny_dir, out_dir, f"student.model={tmp_path / 'absent'}")
    with pytest.raises(ConfigError, match=r"student\.model"):
        prepare.prepare(config)
    assert not out_dir.exists()


def test_no_ray_after_prepare(ray_was_running: bool) -> None:
    assert ray.is_initialized() == ray_was_running


def test_resubmission_from_another_working_dir_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ray job submit` unpacks the working dir somewhere new each time; relative model paths must still
    resume the same run (the run dir keeps the config as written), while stages get absolute paths."""
    out_dir = tmp_path / "runs"
    relative = ["tiny_models=models", "teachers.0.model=models/teacher-a", "teachers.1.model=models/teacher-b",
                "student.model=models/student-t5"]
    prepared = []
    for copy in ("first", "second"):
        (tmp_path / copy).mkdir()
        monkeypatch.chdir(tmp_path / copy)
        prepared.append(prepare.prepare(make_config(tmp_path / "unused", out_dir, *relative)))
    assert prepared[0].run_dir == prepared[1].run_dir == (out_dir / "run").resolve()
    assert yaml.safe_load((out_dir / "run" / "config.yaml").read_text())["student"]["model"] == "models/student-t5"
    assert prepared[1].config.student.model == str(tmp_path / "second" / "models" / "student-t5")


def test_fields_added_to_the_schema_later_do_not_block_a_resume(tiny_dir: Path, out_dir: Path) -> None:
    first = prepare.prepare(make_config(tiny_dir, out_dir))
    saved = yaml.safe_load((first.run_dir / "config.yaml").read_text())
    del saved["data"]["strict"]  # as written by a version that had no such field
    (first.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert prepare.prepare(make_config(tiny_dir, out_dir)).run_dir == first.run_dir


def test_a_causal_student_is_accepted_but_not_in_one_encoder_mode(tiny_dir: Path, out_dir: Path) -> None:
    prepare.prepare(make_config(tiny_dir, out_dir))  # builds the tiny models
    causal = f"student.model={tiny_dir / 'teacher-a'}"
    assert prepare.prepare(make_config(tiny_dir, out_dir, causal, "output.run_name=causal")).run_dir.name == "causal"
    with pytest.raises(ConfigError, match="train.mode: one_encoder .* needs an encoder-decoder student"):
        prepare.prepare(make_config(tiny_dir, out_dir, causal, "train.mode=one_encoder",
                                     "output.run_name=causal-one"))
