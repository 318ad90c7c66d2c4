"""Issue #16: the project deletes or overwrites only what it created, proven by a marker it wrote.

Run directories (``runs.py``: the ``.tinyllm-run`` marker), the student export (``markers.py``: its
``_stage.json``), their permissions, and the trust check before a sweep's pickled state is loaded. Each
case is a user's folder or file in the way: it is refused with one line naming the path, and left as it was.
The tiny models' own case is in test_tiny.py. No Ray.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tinyllm_ray import markers, prepare, runs
from tinyllm_ray.config import Config, ConfigError, apply_override, from_dict


def make_config(models: Path, out_dir: Path, *overrides: str) -> Config:
    raw = {
        "data": {"dataset": "synthetic", "n_train": 8, "n_valid": 4, "n_test": 4},
        "teachers": [{"name": "teacher-a", "model": str(models / "teacher-a"), "shots": 1}],
        "student": {"model": str(models / "student-t5")},
        "output": {"dir": str(out_dir), "run_name": "run"},
    }
    for assignment in overrides:
        apply_override(raw, assignment)
    return from_dict(raw)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def test_a_users_folder_with_a_config_yaml_is_not_taken_for_a_run(tiny_models: Path, tmp_path: Path) -> None:
    """Before: any folder holding a ``config.yaml`` was resumed as a run: the user's config was rewritten and an
    export step could remove ``student/`` in it."""
    mine = tmp_path / "runs" / "run"
    (mine / "student").mkdir(parents=True)
    (mine / "config.yaml").write_text((tiny_models / "student-t5" / "config.json").read_text())
    (mine / "student" / "weights.bin").write_bytes(b"my model")
    before = snapshot(mine)
    with pytest.raises(ConfigError, match=r"^output\.run_name: .*run exists and was not created by tinyllm") as info:
        prepare.prepare(make_config(tiny_models, tmp_path / "runs"))
    assert "\n" not in str(info.value)
    assert snapshot(mine) == before


def test_a_user_folder_as_export_in_our_run_is_refused_before_anything_runs(tiny_models: Path, tmp_path: Path) -> None:
    first = prepare.prepare(make_config(tiny_models, tmp_path / "runs"))
    (first.run_dir / "student").mkdir()
    (first.run_dir / "student" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"student was not written by tinyllm \(no _stage\.json\)"):
        prepare.prepare(make_config(tiny_models, tmp_path / "runs"))
    assert (first.run_dir / "student" / "notes.txt").read_text() == "mine"


def test_export_replaces_only_its_own_export(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    (checkpoint / "optimizer.pt").write_bytes(b"state")
    export = tmp_path / "student"
    markers.export_checkpoint(checkpoint, export, {"key": "k1"})
    assert markers.finished(export, "k1") == {"key": "k1"}
    (checkpoint / "model.safetensors").write_bytes(b"weights 2")
    markers.export_checkpoint(checkpoint, export, {"key": "k2"})  # ours: replaced
    assert (export / "model.safetensors").read_bytes() == b"weights 2"
    assert markers.finished(export, "k1") is None and markers.finished(export, "k2") == {"key": "k2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "student"]  # no temporary left
    (export / markers.MARKER).unlink()  # now it could be anyone's
    with pytest.raises(markers.NotOursError, match="was not written by tinyllm"):
        markers.export_checkpoint(checkpoint, export, {"key": "k3"})
    assert (export / "model.safetensors").read_bytes() == b"weights 2"


def test_run_name_that_is_a_file_is_refused(tiny_models: Path, tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "run").write_text("a file of mine")
    with pytest.raises(ConfigError, match=r"^output\.run_name: .*run is not a directory"):
        prepare.prepare(make_config(tiny_models, tmp_path / "runs"))
    assert (tmp_path / "runs" / "run").read_text() == "a file of mine"


def test_output_dir_that_is_a_file_is_refused(tiny_models: Path, tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("a file of mine")
    with pytest.raises(ConfigError, match=r"^output\.dir: .*runs is not a directory"):
        prepare.prepare(make_config(tiny_models, tmp_path / "runs"))


@pytest.mark.parametrize("content", [b"student: [unclosed\n", b"\xff\xfe not utf-8", b"a: &a [*a]\n"])
def test_our_run_with_a_broken_saved_config_is_one_error(tiny_models: Path, tmp_path: Path, content: bytes) -> None:
    first = prepare.prepare(make_config(tiny_models, tmp_path / "runs"))
    (first.run_dir / "config.yaml").write_bytes(content)
    with pytest.raises(ConfigError, match=r"^output\.run_name: .*config\.yaml") as info:
        prepare.prepare(make_config(tiny_models, tmp_path / "runs"))
    assert len(str(info.value)) < 800
    assert (first.run_dir / "config.yaml").read_bytes() == content


def test_run_dir_is_private_unless_the_config_shares_it(tiny_models: Path, tmp_path: Path) -> None:
    private = prepare.prepare(make_config(tiny_models, tmp_path / "runs"))
    assert stat.S_IMODE(private.run_dir.stat().st_mode) == 0o700
    shared = prepare.prepare(make_config(tiny_models, tmp_path / "runs", "output.run_name=team",
                                          "output.access=group-read"))
    assert stat.S_IMODE(shared.run_dir.stat().st_mode) == 0o750
    assert json.loads((shared.run_dir / runs.MARKER).read_text())["created_by"] == "tinyllm_ray"


def test_export_mode_follows_the_setting(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    markers.export_checkpoint(tmp_path / "ckpt", tmp_path / "student", {"key": "k"}, mode=0o750)
    assert stat.S_IMODE((tmp_path / "student").stat().st_mode) == 0o750


def test_sweep_state_writable_by_others_is_not_unpickled(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "tune" / "sweep").mkdir(parents=True)
    state = run / "tune" / "sweep" / "tuner.pkl"
    state.write_bytes(b"pickle")
    for path in (run, run / "tune", run / "tune" / "sweep"):
        path.chmod(0o700)
    state.chmod(0o600)
    paths = [run, run / "tune", run / "tune" / "sweep", state]
    runs.check_trusted(paths, "owner", "it is loaded with pickle")  # private: fine
    state.chmod(0o666)
    with pytest.raises(ConfigError, match=r"tuner\.pkl can be written by others .*loaded with pickle.*chmod go-w"):
        runs.check_trusted(paths, "owner", "it is loaded with pickle")
    state.chmod(0o660)
    with pytest.raises(ConfigError, match="can be written by others"):
        runs.check_trusted(paths, "owner", "it is loaded with pickle")
    runs.check_trusted(paths, "group-write", "it is loaded with pickle")  # the team was trusted on purpose


def test_sweep_state_of_another_user_is_not_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.raises(ConfigError, match="belongs to another user"):
        runs.check_trusted([tmp_path], "owner", "it is loaded with pickle")
