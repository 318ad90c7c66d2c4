"""Checks on what a user hands the project, before it is opened or quoted back.

- ``path_problem(path, want)``: why ``path`` is not a readable regular file (``want="file"``) or directory
  (``want="dir"``), or ``None``. It looks with ``stat`` and never opens the path, so a FIFO or a device
  named like a data file is refused instead of blocking the run; symlink loops, dangling links and
  permission errors are named as such.
- ``clip(value)``: a value quoted for an error message, at most a couple of hundred characters, so a huge
  or hostile value (a megabyte string, an expanded YAML alias bomb) cannot flood the console.

No project imports: the config and the data readers both use it, each raising its own error type.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any, Literal

CLIP_CHARS = 200


def clip(value: Any, limit: int = CLIP_CHARS) -> str:
    """``repr(value)`` (strings as they are) cut to ``limit`` characters, saying how much was left out."""
    text = value if isinstance(value, str) else _bounded_repr(value, limit)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text) - limit} more characters)"


def _bounded_repr(value: Any, limit: int) -> str:
    # repr of a huge container would build the whole text first: describe big ones by their size instead.
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        return repr(value)
    except (RecursionError, ValueError):  # a self-referencing structure, an int past the digit limit
        return f"<{type(value).__name__}>"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def path_problem(path: str | os.PathLike, want: Literal["file", "dir"] = "file") -> str | None:
    """Why ``path`` cannot be read as a ``want``, as a phrase (``"is a FIFO (named pipe)"``), or ``None``."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a dangling symlink" if path.is_symlink() else "does not exist"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symlink loop"
        if err.errno in (errno.EACCES, errno.EPERM):
            return "cannot be read (permission denied)"
        if err.errno == errno.ENOTDIR:
            return "does not exist (a parent is not a directory)"
        if err.errno == errno.ENAMETOOLONG:
            return "is not a usable path (name too long)"
        return f"cannot be read ({err.strerror or err})"
    except ValueError:  # an embedded NUL byte
        return "is not a usable path"
    if want == "dir":
        if not stat.S_ISDIR(mode):
            return "is not a directory"
        access = os.R_OK | os.X_OK
    else:
        if not stat.S_ISREG(mode):
            return f"is {_kind(mode)}, not a regular file"
        access = os.R_OK
    if not os.access(path, access):
        return "cannot be read (permission denied)"
    return None
