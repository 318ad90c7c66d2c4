"""Dataset readers behind one registry: ``READERS[name](data_config) -> {"train", "valid", "test"}``.

Every reader returns ``Question`` records; ``load_splits`` checks each one (``schema.problems``) and
fails with the split, row and reason of the first bad rows instead of letting them reach Ray.
"""

from __future__ import annotations

from collections.abc import Callable

from tinyllm_ray.config import ConfigError, DataConfig
from tinyllm_ray.data import synthetic
from tinyllm_ray.data.schema import Question, problems

SPLITS = ("train", "valid", "test")


def _synthetic(data: DataConfig) -> dict[str, list[Question]]:
    return synthetic.generate(
        data.n_train, data.n_valid, data.n_test, seed=data.seed,
        min_choices=data.min_choices, max_choices=data.max_choices,
    )


READERS: dict[str, Callable[[DataConfig], dict[str, list[Question]]]] = {"synthetic": _synthetic}


class DataError(ValueError):
    """Input data that cannot be used; the message names the source, split and row."""


def load_splits(data: DataConfig) -> dict[str, list[Question]]:
    reader = READERS.get(data.dataset)
    if reader is None:
        raise ConfigError(f"data.dataset: unknown dataset {data.dataset!r} (known: {', '.join(sorted(READERS))})")
    splits = reader(data)
    bad = [
        f"{split} row {i} (id {q.id!r}): {'; '.join(why)}"
        for split in SPLITS
        for i, q in enumerate(splits[split])
        if (why := problems(q))
    ]
    if bad:
        shown = "\n  ".join(bad[:10])
        raise DataError(f"dataset {data.dataset!r}: {len(bad)} invalid row(s):\n  {shown}")
    for split in SPLITS:
        if not splits[split]:
            raise DataError(f"dataset {data.dataset!r}: the {split} split is empty")
    ids = [q.id for split in SPLITS for q in splits[split]]
    if len(set(ids)) != len(ids):
        raise DataError(f"dataset {data.dataset!r}: question ids are not unique across splits")
    return splits
