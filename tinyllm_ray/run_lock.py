"""One driver per run directory: ``<run>/driver.lock``, held for the run's life.

``hold(run_dir)`` creates the lock file exclusively (``O_CREAT | O_EXCL``, which local disks and NFS v3+ both
honour) with who holds it: host, pid, Ray job id, start time, and a heartbeat that a thread rewrites every
``HEARTBEAT_S`` seconds. A second driver finds the file and stops at once with one line naming the holder
(``RunBusyError``, a ``ConfigError``: exit status 2, nothing written). A lock whose holder is gone is taken over
with a warning naming it: its heartbeat is older than ``STALE_S`` (a driver on another node that died), or it
names a process of this host that no longer runs (a driver killed here). ``DriverLock.release`` removes the file
only while it still holds this driver's token.

The sweep's trials and the Train workers write under their driver's lock (they are its stages);
``tinyllm predict`` and ``tinyllm eval`` only read and take none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tinyllm_ray.config import ConfigError

log = logging.getLogger("tinyllm_ray")

LOCK_FILE = "driver.lock"
HEARTBEAT_S = 10.0
STALE_S = 90.0
"""A lock not refreshed for this long is taken over: nine missed heartbeats (a paused VM, a slow shared disk)."""


class RunBusyError(ConfigError):
    """Another live driver holds the run directory."""


def _read(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _process_gone(pid: Any) -> bool:
    """Whether ``pid`` names no running process of this host."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError, OverflowError):
        return False
    return False


def describe(info: dict[str, Any]) -> str:
    job = f", Ray job {info['ray_job_id']}" if info.get("ray_job_id") else ""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}{job}, started {started}"


def _why_stale(info: dict[str, Any] | None, modified: float, now: float) -> str | None:
    """Why a lock's holder is gone, or None while it may still run."""
    if info is None:  # cut short while written: judged by its age alone
        return f"unreadable, last written {now - modified:.0f} s ago" if now - modified > STALE_S else None
    age = now - float(info.get("heartbeat", modified))
    if age > STALE_S:
        return f"its heartbeat is {age:.0f} s old"
    if info.get("host") == socket.gethostname() and _process_gone(info.get("pid")):
        return "that process no longer runs"
    return None


@dataclasses.dataclass
class DriverLock:
    path: Path
    info: dict[str, Any]
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            held = _read(self.path)
            if held is not None and held.get("token") != self.info["token"]:
                log.error("the lock %s was taken over by %s; this driver no longer holds the run directory",
                          self.path, describe(held))
                return
            self.info["heartbeat"] = time.time()
            with contextlib.suppress(OSError):  # a full or vanished disk: the next beat tries again
                _write(self.path, self.info)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        held = _read(self.path)
        if held is not None and held.get("token") == self.info["token"]:
            self.path.unlink(missing_ok=True)


def _write(path: Path, info: dict[str, Any]) -> None:
    """Replace ``path`` with ``info`` in one rename (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{info['token'][:8]}.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def hold(run_dir: Path) -> DriverLock:
    """Take ``run_dir``'s lock for this driver (see the module docstring); ``RunBusyError`` while another holds it."""
    path = run_dir / LOCK_FILE
    now = time.time()
    info = {"host": socket.gethostname(), "pid": os.getpid(),
            "ray_job_id": os.environ.get("RAY_JOB_SUBMISSION_ID") or os.environ.get("RAY_JOB_ID") or "",
            "started": now, "heartbeat": now, "token": uuid.uuid4().hex}
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        held = _read(path)
        modified = path.stat().st_mtime if path.exists() else now
        why = _why_stale(held, modified, now)
        who = describe(held) if held else "an unknown driver"
        if why is None:
            raise RunBusyError(f"{run_dir} is in use by another driver ({who}; its lock {path} is refreshed every "
                               f"{HEARTBEAT_S:.0f} s): wait for it to finish or stop it, or use another "
                               f"output.run_name") from None
        log.warning("taking over the lock of %s: the driver that held it is gone (%s, %s)", run_dir, who, why)
        _write(path, info)
        time.sleep(0.05)  # two drivers taking over at once: the later rename wins, the other sees it here
        if (_read(path) or {}).get("token") != info["token"]:
            raise RunBusyError(f"{run_dir} was just taken by another driver ({describe(_read(path) or {})}); "
                               f"use another output.run_name") from None
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(info, indent=2) + "\n")
    lock = DriverLock(path, info)
    lock._thread = threading.Thread(target=lock._beat, name="run-lock-heartbeat", daemon=True)
    lock._thread.start()
    return lock
