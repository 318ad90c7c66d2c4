"""The run directory ``<output.dir>/<output.run_name>``: where it is, whether it may be used, and its creation.

The project writes only into run directories it created, proven by the ``.tinyllm-run`` marker it writes
first. ``locate(config)`` decides, without writing anything, which directory a run uses and refuses one in the
way (a user's folder, a file, a run of another config); ``create`` then makes it, readable by its owner
only unless ``output.access`` shares it with the group. ``check_trusted`` guards what a resume would load
with pickle (Tune's sweep state): a run directory others can write to could hand the run code to execute.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

from tinyllm_ray.config import Config, ConfigError, from_dict, to_yaml
from tinyllm_ray.config.loading import read_yaml_file
from tinyllm_ray.input_checks import DIRECTORY, require_problem
from tinyllm_ray.markers import NotOursError, check_replaceable, read_marker

log = logging.getLogger("tinyllm_ray")

MARKER = ".tinyllm-run"
CONFIG_FILE = "config.yaml"
EXPORT_DIR = "student"
ACCESS_MODES = {"owner": 0o700, "group-read": 0o750, "group-write": 0o770}

# Settings that change where and how fast a run computes, not what: a resumed run may differ in them.
_NOT_RESULT_SECTIONS = ("output", "ray", "tracking")
_NOT_RESULT_FIELDS = ("replicas", "num_cpus", "num_gpus", "cpus_per_worker", "log_every",
                      "gpu_memory_utilization", "max_concurrent_trials")


@dataclasses.dataclass(frozen=True)
class RunDir:
    path: Path
    resume: bool
    """The directory holds an earlier run of this config (its finished stages are reused)."""


def is_ours(directory: Path) -> bool:
    """Whether ``directory`` holds the marker this project writes into every run directory it creates."""
    return (read_marker(directory, MARKER) or {}).get("created_by") == "tinyllm_ray"


def locate(config: Config) -> RunDir:
    """The run directory this config uses; ``ConfigError`` (one line naming the path) when it may not."""
    out = config.output
    parent = Path(out.dir).expanduser()
    if os.path.lexists(parent) and (problem := require_problem(parent, DIRECTORY)):
        raise ConfigError(f"output.dir: {parent} {problem}")
    run_dir = parent / out.run_name
    if out.if_exists == "new" and os.path.lexists(run_dir):
        n = 2
        while os.path.lexists(run_dir.with_name(f"{out.run_name}-{n}")):
            n += 1
        return RunDir(run_dir.with_name(f"{out.run_name}-{n}"), resume=False)
    if not os.path.lexists(run_dir):
        return RunDir(run_dir, resume=False)
    if out.if_exists == "error":
        raise ConfigError(f"output.run_name: run directory {run_dir} already exists (output.if_exists=error)")
    if problem := require_problem(run_dir, DIRECTORY):
        raise ConfigError(f"output.run_name: {run_dir} {problem}; choose another run name")
    if not is_ours(run_dir):
        if any(run_dir.iterdir()):
            raise ConfigError(f"output.run_name: {run_dir} exists and was not created by tinyllm (no {MARKER} "
                              f"marker); tinyllm writes only into its own run directories: choose another "
                              f"output.run_name or output.dir")
        return RunDir(run_dir, resume=False)  # an empty folder: nothing to lose
    _check_same_config(run_dir, config)
    try:
        check_replaceable(run_dir / EXPORT_DIR, "student export")
    except NotOursError as err:
        raise ConfigError(f"output.run_name: {err}") from None
    return RunDir(run_dir, resume=True)


def _check_same_config(run_dir: Path, config: Config) -> None:
    saved = run_dir / CONFIG_FILE
    if not os.path.lexists(saved):
        return  # created, then stopped before its config was written
    try:
        loaded = read_yaml_file(saved, "saved run config")
    except ConfigError as err:
        raise ConfigError(f"output.run_name: {err}; choose another run name") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"output.run_name: {saved} is not a readable run config; choose another run name")
    try:  # through the current schema, so fields added since with their defaults are no difference
        loaded = from_dict(loaded, source=str(saved)).to_dict()
    except ConfigError:
        pass  # compare as written; the differing keys are reported below
    before = result_fields(loaded)
    now = result_fields(config.to_dict())
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        raise ConfigError(
            f"output.run_name: run directory {run_dir} holds a run with a different config "
            f"(differs at: {', '.join(changed[:8])}). Resume it with its own config, choose another "
            f"name (--set output.run_name=NAME), or --set output.if_exists=new."
        )
    log.info("resuming run %s: finished stages are reused", run_dir)


def create(where: RunDir, config: Config) -> Path:
    """Make (or reopen) the planned directory: marker first, then the config as written, then its mode."""
    run_dir = where.path
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not is_ours(run_dir):
            marker = {"created_by": "tinyllm_ray", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (run_dir / MARKER).write_text(json.dumps(marker) + "\n")
        (run_dir / CONFIG_FILE).write_text(to_yaml(config))
        run_dir.chmod(ACCESS_MODES[config.output.access])
    except OSError as err:
        raise ConfigError(f"output.dir: cannot write the run directory {run_dir}: {err}") from None
    return run_dir.resolve()


def check_trusted(paths: list[Path], access: str, why: str) -> None:
    """Refuse (``ConfigError``) when any of ``paths`` belongs to another user or can be written by others
    (by the group too, unless ``output.access`` is ``group-write``): ``why`` says what would be loaded."""
    uid = os.geteuid()
    for path in paths:
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if info.st_uid != uid:
            raise ConfigError(f"{path} belongs to another user (uid {info.st_uid}); {why}. Resume only your own runs")
        writable = stat.S_IWOTH | (0 if access == "group-write" else stat.S_IWGRP)
        if info.st_mode & writable:
            raise ConfigError(f"{path} can be written by others (mode {stat.filemode(info.st_mode)}); {why}. "
                              f"If you trust its content: chmod go-w {path}")


def result_fields(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config flattened to ``a.b.c`` keys, without the settings a resumed run may change."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if not prefix and key in _NOT_RESULT_SECTIONS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(result_fields(value, name + "."))
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                flat.update(result_fields(item, f"{name}.{i}."))
            flat[f"{name}.count"] = len(value)
        elif key in _NOT_RESULT_FIELDS:
            continue
        else:
            flat[name] = value
    return flat
