"""Checks on what a user hands the project, before it is opened or quoted back.

- ``require_problem(path, *kinds)``: why ``path`` is not one of ``kinds`` (``FILE``, ``DIRECTORY``), as a
  phrase that follows the path (``"is not a regular file: it is a FIFO (named pipe)"``), or ``""``. It looks
  with ``os.stat`` and never opens the path, so a FIFO or a device named like a data file is refused instead
  of blocking the run; symlink loops, dangling links and permission errors are named as such.
- ``clip(value)`` / ``shorten(text)``: a value quoted for a message, at most a couple of hundred characters,
  so a huge or hostile value (a megabyte string, an expanded YAML alias bomb) cannot flood the console.

No project imports: the config and the data readers both use it, each raising its own error type.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

FILE, DIRECTORY = "regular file", "directory"
_KINDS = ((stat.S_ISREG, FILE), (stat.S_ISDIR, DIRECTORY), (stat.S_ISFIFO, "FIFO (named pipe)"),
          (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
CLIP = 200
"""Most characters of a user's value that an error or reject reason quotes."""


def shorten(text: str, limit: int = CLIP) -> str:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    return text if len(text) <= limit else f"{text[:limit]}…({len(text) - limit} more characters)"


def clip(value: Any, limit: int = CLIP) -> str:
    """``repr(value)`` cut to ``limit`` characters: how a message quotes a value from a config or the data."""
    # repr of a huge container would build the whole text first: describe big ones by their size instead.
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # a self-referencing structure, an int past Python's digit limit
        return f"<{type(value).__name__}>"
    return shorten(text, limit)


def os_problem(path: Path, err: OSError) -> str:
    """What an ``OSError`` from looking at or reading ``path`` means, phrased to follow the path."""
    if err.errno == errno.ELOOP:
        return "is a symlink loop"
    if isinstance(err, (FileNotFoundError, NotADirectoryError)):
        if os.path.islink(path):
            return f"is a dangling symlink (its target {os.readlink(path)} does not exist)"
        return "does not exist"
    if isinstance(err, PermissionError):
        return "cannot be read: permission denied"
    if err.errno == errno.ENAMETOOLONG:
        return "is not a usable path: name too long"
    return f"cannot be read: {err.strerror or err}"


def kind_problem(path: str | os.PathLike) -> tuple[str, str]:
    """``(kind, "")`` with what ``path`` is (``FILE``, ``DIRECTORY``, ``"FIFO (named pipe)"``, ...), from
    ``os.stat`` alone, or ``("", problem)`` when it cannot be looked at."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return "", os_problem(path, err)
    except ValueError:  # an embedded NUL byte
        return "", "is not a usable path"
    return next((name for is_kind, name in _KINDS if is_kind(mode)), "special file"), ""


def require_problem(path: str | os.PathLike, *kinds: str) -> str:
    """``""`` when ``path`` is one of ``kinds``, else why not, phrased to follow the path."""
    kind, problem = kind_problem(path)
    if problem:
        return problem
    return "" if kind in kinds else f"is not a {' or '.join(kinds)}: it is a {kind}"
