"""Loading a dataset into ``Question`` splits: one registry from format to reader, then one set of checks.

``FORMATS[fmt](data_config)`` returns a ``Source``: the rows of each split (a ``Question`` or a reject
reason, with the file and position) and, for the authors' layout, their precomputed rationales.
``load_data`` then rejects duplicate ids, fails in strict mode, holds out a seeded slice of train as
valid where the dataset has none (test is never used for selection), and keeps every reject with its
reason for the report and ``rejects.jsonl``.

A split published without answers (PIQA's, RiddleSense's and CommonsenseQA's test splits: every row has an
empty label) is not bad data: it is left out whole, counted once in ``unlabelled`` (not as rejects, and not
stopped on in strict mode). Its questions cannot be scored, so when the test split is unlabelled the labelled
valid split is divided into valid and test (``test_from_valid``), half each, by a seeded draw: the authors'
protocol for PIQA (919 + 919 of the hub's 1,838 validation questions) and RiddleSense (511 + 510 of 1,021).
Their exact draw was not published, so the same sizes hold other questions; their files (``format:
official``) give their very split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tinyllm_ray import answers
from tinyllm_ray.config import SYNTHETIC_TEACHERS, ConfigError, DataConfig, precomputed_teachers
from tinyllm_ray.data import synthetic
from tinyllm_ray.data.records import DIRECTORY, FILE, NO_LABEL, DataError, Row, require
from tinyllm_ray.data.schema import HELD_OUT, SPLITS, Question, task_problem

__all__ = ["DataError", "LoadedData", "load_data", "infer_format", "FORMATS"]


@dataclasses.dataclass
class Source:
    rows: dict[str, list[Row]]
    rationales: dict[str, dict[str, list[tuple[str, str]]]] = dataclasses.field(default_factory=dict)
    """teacher -> split -> (rationale, reject reason), aligned with ``rows[split]``."""
    files: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LoadedData:
    splits: dict[str, list[Question]]
    """``train`` and ``valid`` always (when train exists); ``test`` when the dataset has one."""
    rows_read: dict[str, int]
    rejects: list[dict[str, str]]
    """``{"split", "where", "id", "reason"}`` for every row left out."""
    valid_from_train: bool
    precomputed: dict[str, dict[str, tuple[str, str]]]
    """teacher -> training question id -> (rationale, reject reason)."""
    files: list[str]
    unlabelled: dict[str, int] = dataclasses.field(default_factory=dict)
    """Splits published without answers, left out: split -> rows."""
    test_from_valid: bool = False
    """The test split was unlabelled, so valid was divided into valid and test."""
    task: str = "choice"
    """``choice`` or ``open`` (``data.task``, or what the training questions are)."""
    scorer: str = answers.CHOICE
    """How answers are judged: ``choice`` for multiple choice, ``exact`` or ``numeric`` for open tasks."""

    def reject_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, Counter] = {s: Counter() for s in self.rows_read}
        for r in self.rejects:
            counts[r["split"]][r["reason"]] += 1
        return {s: dict(c) for s, c in counts.items()}


def _synthetic(data: DataConfig) -> Source:
    splits = synthetic.generate(data.n_train, data.n_valid, data.n_test, seed=data.seed,
                                min_choices=data.min_choices, max_choices=data.max_choices,
                                task=data.task or "choice")
    # The generator's reference rationales: the one precomputed teacher of this dataset.
    (teacher,) = SYNTHETIC_TEACHERS
    rationales = {teacher: {s: [(q.reference_rationale, "" if q.reference_rationale else "empty") for q in qs]
                            for s, qs in splits.items()}}
    return Source({s: [Row(f"synthetic:{s}:{i}", q) for i, q in enumerate(qs)] for s, qs in splits.items()},
                  rationales)


def _official(data: DataConfig) -> Source:
    from tinyllm_ray.data.official import read_official

    found = read_official(_path(data))
    return Source(found.rows, found.rationales, found.files)


def _hub(data: DataConfig) -> Source:
    from tinyllm_ray.data.hub import read_hub

    served: list[str] = []  # by hub name: the dataset's commit, part of the data's identity
    rows = read_hub(data.dataset, _path(data) if data.path else None, data.revision, served)
    return Source(rows, files=served)


def _jsonl(data: DataConfig) -> Source:
    from tinyllm_ray.data.mapped import read_mapped

    return Source(read_mapped(_path(data), dict(data.columns)))


FORMATS: dict[str, Callable[[DataConfig], Source]] = {
    "synthetic": _synthetic, "official": _official, "hub": _hub, "jsonl": _jsonl,
}


def _path(data: DataConfig) -> Path:
    """``data.path``, which must be a regular file or a directory (looked at, not opened), else ``ConfigError``:
    it does not exist, is a FIFO or a device, a symlink loop or a dangling symlink, or cannot be read."""
    if not data.path:
        raise ConfigError(f"data.path: dataset {data.dataset!r} in format {infer_format(data)!r} needs a path")
    try:
        path = Path(data.path).expanduser()
    except RuntimeError as err:  # ~user of an unknown user
        raise ConfigError(f"data.path: {data.path}: {err}") from None
    try:
        require(path, FILE, DIRECTORY)
    except DataError as err:
        raise ConfigError(f"data.path: {err}") from None
    return path


def infer_format(data: DataConfig) -> str:
    """``data.format``, or what the dataset name, path and column mapping imply."""
    if data.format:
        return data.format
    if data.dataset == "synthetic":
        return "synthetic"
    if data.columns:
        return "jsonl"
    if data.path:
        from tinyllm_ray.data.official import looks_official

        if looks_official(_path(data)):
            return "official"
    from tinyllm_ray.data.hub import HUB_SCHEMAS

    if data.dataset in HUB_SCHEMAS:
        return "hub"
    raise ConfigError(
        f"data.format: cannot tell how to read dataset {data.dataset!r}"
        f"{f' at {data.path}' if data.path else ''}; set data.format to official, hub or jsonl "
        f"(hub datasets: {', '.join(sorted(HUB_SCHEMAS))})"
    )


def read_source(data: DataConfig) -> Source:
    return FORMATS[infer_format(data)](data)


@contextlib.contextmanager
def no_cycle_collection():
    """Python's cycle collector paused while a dataset is read (and while the teachers' stage keys are written,
    ``keys.teacher_keys``). Reading makes a few objects per question and no reference cycles, and each full
    collection on the way traverses every object made so far, so with it on the cost per question grows with the
    dataset (figures: docs/benchmarks.md, Scale). Objects are still freed as their counts drop; it resumes after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_data(data: DataConfig, source: Source | None = None, require_train: bool = True,
              hold_out_valid: bool = True) -> LoadedData:
    """Questions per split, rejects with reasons, and the precomputed rationales of the training questions."""
    with no_cycle_collection():
        return _load_data(data, source, require_train, hold_out_valid)


def _load_data(data: DataConfig, source: Source | None, require_train: bool, hold_out_valid: bool) -> LoadedData:
    source = source or read_source(data)
    seen: set[str] = set()
    splits: dict[str, list[Question]] = {}
    kept_index: dict[str, list[int]] = {}
    rejects: list[dict[str, str]] = []
    unlabelled = {split: len(rows) for split, rows in source.rows.items() if is_unlabelled(rows)}
    task = data.task or infer_task(source)
    for split in SPLITS:
        splits[split], kept_index[split] = [], []
        for i, row in enumerate([] if split in unlabelled else source.rows.get(split, [])):
            reason = row.reason if row.question is None else (
                "duplicate id" if row.question.id in seen else task_problem(row.question, task))
            if reason:
                if data.strict:
                    raise DataError(f"{row.where}: {reason} (data.strict is on)")
                rejects.append({"split": split, "where": row.where,
                                "id": row.question.id if row.question else "", "reason": reason})
                continue
            seen.add(row.question.id)
            splits[split].append(row.question)
            kept_index[split].append(i)
    if require_train and not splits["train"]:
        raise DataError(f"dataset {data.dataset!r}: no usable training questions"
                        f"{f' in {data.path}' if data.path else ''}")
    precomputed = _precomputed(data, source, splits["train"], kept_index["train"])
    test_from_valid = hold_out_valid and "test" in unlabelled and len(splits["valid"]) >= 2
    if test_from_valid:  # the authors' protocol where the published test split has no answers
        splits["valid"], splits["test"] = _draw(splits["valid"], len(splits["valid"]) // 2, data.seed)
    valid_from_train = hold_out_valid and bool(splits["train"]) and not splits["valid"]
    if valid_from_train:
        if len(splits["train"]) < 2:
            raise DataError(f"dataset {data.dataset!r}: no valid split, and {len(splits['train'])} training "
                            f"question(s) are too few to hold one out")
        n = len(splits["train"])
        splits["train"], splits["valid"] = _draw(splits["train"], min(n - 1, max(1, round(n * data.valid_fraction))),
                                                 data.seed)
    if data.max_train:
        splits["train"] = splits["train"][: data.max_train]
    for split in HELD_OUT:
        if not splits[split]:
            del splits[split]
    rows_read = {s: len(source.rows[s]) for s in SPLITS if s in source.rows}
    scorer = answers.CHOICE if task == "choice" else (data.scorer or answers.infer_scorer(
        q.answer for q in splits["train"]))
    return LoadedData(splits, rows_read, rejects, valid_from_train, precomputed, source.files, unlabelled,
                      test_from_valid, task, scorer)


def infer_task(source: Source) -> str:
    """``open`` when most training questions read (every split's, without a train split) have no choices, else
    ``choice`` (the paper's task, and the one of a dataset with no usable row at all); the rows of the other
    kind are then rejected, each with its reason."""
    rows = source.rows.get("train") or [row for rows in source.rows.values() for row in rows]
    kinds = [row.question.is_open for row in rows if row.question is not None]
    return "open" if 2 * sum(kinds) > len(kinds) else "choice"


def _draw(questions: list[Question], k: int, seed: int) -> tuple[list[Question], list[Question]]:
    """``questions`` split by a seeded draw of ``k`` of them: (the rest, the drawn), each in its order."""
    drawn = set(random.Random(seed).sample(range(len(questions)), k))
    return ([q for i, q in enumerate(questions) if i not in drawn], [q for i, q in enumerate(questions) if i in drawn])


def is_unlabelled(rows: list[Row]) -> bool:
    """Whether a split was published without answers: it has rows, and every one lacks its label."""
    return bool(rows) and all(row.question is None and row.reason == NO_LABEL for row in rows)


def _precomputed(data: DataConfig, source: Source, train: list[Question], index: list[int]):
    if data.rationales != "precomputed":
        return {}
    out = {}
    for teacher in precomputed_teachers(data):
        aligned = source.rationales.get(teacher, {}).get("train")
        if aligned is None:
            raise DataError(f"data.rationales is 'precomputed' but {data.path} has no llm/train_CoT_<k>.json files")
        out[teacher] = {q.id: aligned[i] for q, i in zip(train, index)}
    return out


def inspect(data: DataConfig) -> dict:
    """What ``tinyllm data inspect`` prints: the dataset as stored, per split, before any hold-out."""
    source = read_source(data)
    loaded = load_data(data, source, require_train=False, hold_out_valid=False)
    reasons = loaded.reject_counts()
    out: dict = {"dataset": data.dataset, "format": infer_format(data), "task": loaded.task,
                 "scorer": loaded.scorer, "splits": {}}
    for split, rows in loaded.rows_read.items():
        choices = Counter(len(q.choices) for q in loaded.splits.get(split, []))
        out["splits"][split] = {"rows": rows, "rejected": sum(reasons[split].values()),
                                "choices": {str(n): choices[n] for n in sorted(choices)},
                                "unlabelled": split in loaded.unlabelled}
    out["reject_reasons"] = dict(Counter(r["reason"] for r in loaded.rejects))
    if source.rationales:
        out["teachers"] = {
            teacher: {split: sum(1 for row, (_, why) in zip(source.rows[split], aligned) if row.question and not why)
                      for split, aligned in by_split.items()}
            for teacher, by_split in source.rationales.items()
        }
    return out
