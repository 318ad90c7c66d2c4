"""Markers: the ``_stage.json`` that says a stage finished (and with which key), the hash those keys are made with
(``stage_key``; each stage's own key is in ``keys.py``), and the student export that replaces only its own.

A stage's output directory is complete when its marker holds the stage key, a hash of the config parts
the output depends on; a re-run with the same key reuses it. The marker is also the proof that the project
wrote the directory: ``export_checkpoint`` replaces an export only when it carries one, and refuses a
directory in the way that does not (never a user's files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("tinyllm_ray")

MARKER = "_stage.json"
# What a student checkpoint holds besides the weights the export keeps (``student.arms`` writes them):
ARMS_DIR = "arms"  # arms/<name>/ (weights, state) and arms/<name>/best/ (the selection) of the other arms
STATE_FILE = "train_state.pt"  # optimizer, schedule, step, selection (also under arms/<name>/)


class NotOursError(RuntimeError):
    """A path the project would write is taken by something it did not create."""


def stage_key(*parts: Any, digits: int = 16) -> str:
    """A stable hash of config parts (dataclasses or plain data), to key cached stages."""
    plain = [_key_dict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:digits]


def _key_dict(part: Any) -> dict[str, Any]:
    """A config section as keys see it: the fields its class lists in ``KEY_OMITTED`` are left out while they
    hold one of the listed values (keys added later, whose default must not change the keys of stored stages)."""
    plain = dataclasses.asdict(part)
    for name, values in getattr(type(part), "KEY_OMITTED", {}).items():
        if name in plain and plain[name] in values:
            del plain[name]
    return plain


def read_marker(directory: Path, name: str = MARKER) -> dict[str, Any] | None:
    """The JSON object in ``directory / name`` (a stage's marker by default), or ``None`` when there is none or
    it cannot be read: every marker the project writes to prove a directory its own is read here."""
    try:
        info = json.loads((directory / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def finished(directory: Path, key: str) -> dict[str, Any] | None:
    """The stage figures of ``directory`` when it finished with this key, else ``None``."""
    info = read_marker(directory)
    return info if info is not None and info.get("key") == key else None


def check_replaceable(directory: Path, what: str) -> None:
    """Raise ``NotOursError`` when ``directory`` exists without this project's marker."""
    if os.path.lexists(directory) and (not directory.is_dir() or directory.is_symlink()
                                       or read_marker(directory) is None):
        raise NotOursError(f"{directory} was not written by tinyllm (no {MARKER}) and is where the {what} goes; "
                           f"move it elsewhere and run again")


def export_checkpoint(checkpoint: str | Path, export_dir: Path, info: dict[str, Any], mode: int = 0o700) -> None:
    """Copy a checkpoint's weights and tokenizer (not its optimizer state, nor the other arms trained beside it)
    to ``export_dir`` with ``info`` as its marker. The copy is made beside it and renamed into place; an earlier
    export is replaced only when its marker proves it ours."""
    check_replaceable(export_dir, "student export")
    tmp = Path(tempfile.mkdtemp(prefix=f".{export_dir.name}.tmp-", dir=export_dir.parent))
    old = None
    try:
        shutil.copytree(checkpoint, tmp, ignore=shutil.ignore_patterns(STATE_FILE, "metrics.json", ARMS_DIR),
                        dirs_exist_ok=True)
        (tmp / MARKER).write_text(json.dumps(info, indent=2, default=str))
        tmp.chmod(mode)
        if export_dir.exists():
            old = export_dir.with_name(f"{tmp.name}.old")
            export_dir.rename(old)
        tmp.rename(export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when the copy failed
    if old is not None:
        shutil.rmtree(old)
