"""Finding a dataset's split files in a folder and reading them into rows.

``find_split_files`` looks for the names that datasets are shipped under: ``train.jsonl``, ``obqa_valid.json``,
the hub's shards ``data/test-00000-of-00001.parquet``, its parquet conversion ``<config>/<split>/0000.parquet``,
or a dataset's own names. ``read_split_files`` reads them with a normaliser (one record -> ``Question``) into
``{"train"|"valid"|"test": [Row, ...]}``, each row labelled with its file and position (``to_row``). The hub
schemas (``hub.py``) and the column-mapped files (``mapped.py``) both read their local copies this way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tinyllm_ray.data.records import SUFFIXES, DataError, Row, RowError, list_dir, read_records
from tinyllm_ray.data.schema import Question, problems

SPLIT_NAMES = {"train": "train", "validation": "valid", "valid": "valid", "dev": "valid", "test": "test"}
"""Split names found in files and on the hub -> the pipeline's split names."""

_SPLIT = "|".join(SPLIT_NAMES)
_EXT = "|".join(s.lstrip(".") for s in SUFFIXES)
_NAMED_FILE = re.compile(rf"^(?:.*[_-])?({_SPLIT})\.({_EXT})$", re.IGNORECASE)
_SHARD_FILE = re.compile(rf"^({_SPLIT})-\d+-of-\d+(?:-[0-9a-f]+)?\.parquet$", re.IGNORECASE)
_LOOKED_FOR = (f"<split>.<ext>, <name>_<split>.<ext>, <name>-<split>.<ext>, <split>-00000-of-00001.parquet or "
               f"<split>/0000.parquet (split: {'/'.join(SPLIT_NAMES)}; ext: "
               f"{'/'.join(s.lstrip('.') for s in SUFFIXES)})")

Normalizer = Callable[[dict[str, Any], str], Question]
"""``normalize(record, where)`` -> ``Question``, or ``RowError(reason)`` for a malformed record."""


def to_row(normalize: Normalizer, record: Any, where: str) -> Row:
    """The row of one record at ``where``: its question, or the reason it is left out."""
    if not isinstance(record, dict):
        return Row(where, None, f"record is a {type(record).__name__}, not an object")
    try:
        question = normalize(record, where)
    except RowError as err:
        return Row(where, None, str(err))
    why = problems(question)
    return Row(where, None, "; ".join(why)) if why else Row(where, question)


def find_split_files(directory: Path, subdirs: Iterable[str] = ("data",),
                     extra: Sequence[tuple[str, str]] = ()) -> dict[str, list[Path]]:
    """Split files of ``directory`` (else of the first of its ``subdirs``, else of the first child folder of a
    parquet export, that has any), by split name.

    A split is one file named ``<split>.<ext>``, ``<name>_<split>.<ext>`` or ``<name>-<split>.<ext>``; the
    shards ``<split>-NNNNN-of-NNNNN.parquet`` of a hub export; the ``NNNN.parquet`` files of a ``<split>/``
    folder (the hub's parquet conversion, ``<config>/<split>/0000.parquet``; ``partial-<split>/`` where the
    conversion kept only the start of a large split, used when there is no full one); or the files matching
    ``extra``'s (pattern, split) pairs (a dataset's own names). Raises ``DataError`` when nothing matches, and
    when the directory or a subdirectory cannot be listed; a matching entry that is not a regular file (a
    directory, a FIFO) is reported when it is read.
    """
    folders = [directory, *(directory / sub for sub in subdirs), *_export_configs(directory)]
    patterns = [(re.compile(rf"^{pattern}$", re.IGNORECASE), split) for pattern, split in extra]
    for folder in folders:
        named: dict[str, list[Path]] = {}
        shards: dict[str, list[Path]] = {}
        for file in list_dir(folder, optional=folder is not directory):
            if split := next((split for pattern, split in patterns if pattern.match(file.name)), None):
                shards.setdefault(split, []).append(file)
            elif match := _SHARD_FILE.match(file.name):
                shards.setdefault(SPLIT_NAMES[match[1].lower()], []).append(file)
            elif match := _NAMED_FILE.match(file.name):
                named.setdefault(SPLIT_NAMES[match[1].lower()], []).append(file)
        for split, files in _export_splits(folder).items():
            shards.setdefault(split, files)
        for split in named.keys() & shards.keys():
            named[split] += shards.pop(split)
        for split, files in named.items():
            if len(files) > 1:
                raise DataError(f"{folder}: several files for the {split} split: {', '.join(f.name for f in files)}")
        if named or shards:
            return {**named, **{split: sorted(files) for split, files in shards.items()}}
    raise DataError(f"{directory}: no split files in {', '.join(str(f) for f in folders)}; looked for {_LOOKED_FOR}")


_EXPORT_DIR = re.compile(rf"^(partial-)?({_SPLIT})$", re.IGNORECASE)
_EXPORT_FILE = re.compile(r"^\d+\.parquet$")


def _export_splits(folder: Path) -> dict[str, list[Path]]:
    """The parquet conversion's split folders in ``folder`` (``train/0000.parquet``...), by split; a full
    folder wins over a ``partial-`` one."""
    found: dict[str, tuple[bool, list[Path]]] = {}
    if not folder.is_dir() or folder.is_symlink():
        return {}
    for sub in list_dir(folder):
        match = _EXPORT_DIR.match(sub.name)
        if not match or not sub.is_dir() or sub.is_symlink():
            continue
        files = sorted(f for f in list_dir(sub) if _EXPORT_FILE.match(f.name))
        split, partial = SPLIT_NAMES[match[2].lower()], bool(match[1])
        if files and (split not in found or found[split][0] and not partial):
            found[split] = (partial, files)
    return {split: files for split, (_, files) in found.items()}


def _export_configs(directory: Path) -> list[Path]:
    """The config folders of a parquet conversion's root (``plain_text/``, ``default/``...): child folders that
    hold split folders."""
    if not directory.is_dir() or directory.is_symlink():
        return []
    return [sub for sub in list_dir(directory) if sub.is_dir() and not sub.is_symlink() and _export_splits(sub)]


def read_split_files(files: dict[str, list[Path]], normalize: Normalizer) -> dict[str, list[Row]]:
    """The rows of ``files`` (split -> its files, in order), each record read with ``normalize``."""
    return {split: [to_row(normalize, record, where) for file in paths
                    for where, record in read_records(file, _file_label(file))]
            for split, paths in files.items()}


def _file_label(file: Path) -> str:
    """A file's name in row positions (and so in the ids derived from them): with its split folder for the
    parquet conversion's ``train/0000.parquet``, whose bare names repeat in every split."""
    return f"{file.parent.name}/{file.name}" if _EXPORT_FILE.match(file.name) else file.name
