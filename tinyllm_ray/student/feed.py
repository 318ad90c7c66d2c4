"""Ray Data's side of the student's rows: the tokenised dataset, and one epoch of micro-batches per Train worker.

- ``tokenized_dataset`` runs ``batches.tokenize`` over the text rows with Ray Data, once per run;
- ``epoch_batches`` draws one epoch of collated micro-batches from a Train worker's shard (local shuffle
  seeded per epoch, optional length buckets); ``Collate`` collates them in Ray Data's prefetch thread, not on the
  training thread, pinned in host memory when they go to a GPU;
- ``EarlyStart`` asks for an epoch's first micro-batch in a thread of its own, so the first epoch's start-up
  (Ray Data's split coordinator and streaming executor, far slower than a later epoch's: docs/benchmarks.md)
  runs while the worker loads its models.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from tinyllm_ray import prompts
from tinyllm_ray.config import Config
from tinyllm_ray.student.batches import bucketed, collate, padding, tokenize


class Collate(NumpyBatchCollateFn):
    """``collate`` as Ray Data's collate function, so it runs in Ray Data's prefetch thread, not on the training
    thread; its tensors are pinned when they go to a GPU (``pin``), so the copy to the device is asynchronous.
    With length bucketing (``bucket_size``: questions per micro-batch) a call takes a window of rows and returns
    its micro-batches in buckets of similar length (``bucketed``, one ``rng`` per epoch); else one micro-batch.
    Returns a list of collated micro-batches either way. Ray Data runs it in one thread (``prefetch_batches=1``),
    so the epoch's ``rng`` draws come in the same order on every run."""

    def __init__(self, tasks: Sequence[str], pad_id: int, layout: str, pin: bool = False,
                 bucket_size: int | None = None, rng: np.random.Generator | None = None, multiple: int = 0,
                 rows: int | None = None):
        self.tasks, self.pad_id, self.layout, self.pin = list(tasks), pad_id, layout, pin
        self.bucket_size, self.rng = bucket_size, rng
        self.multiple, self.rows = multiple, rows  # ``collate``'s fixed shapes (a compiled student)

    def __call__(self, batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        parts = bucketed(batch, self.bucket_size, self.rng, self.tasks) if self.bucket_size else [batch]
        out = [collate(part, self.tasks, self.pad_id, self.layout, self.multiple, self.rows) for part in parts]
        return [pin_memory(b) for b in out] if self.pin else out


def pin_memory(batch: Any) -> Any:
    """Every tensor of a collated batch in page-locked host memory (for ``non_blocking`` copies to a GPU)."""
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory()
    if isinstance(batch, dict):
        return {k: pin_memory(v) for k, v in batch.items()}
    return batch


def epoch_batches(shard: Any, config: Config, epoch: int, tasks: Sequence[str], pad_id: int, layout: str,
                  pin: bool = False) -> Iterator[dict[str, Any]]:
    """One epoch of collated micro-batches from this worker's shard: local shuffle seeded per epoch, optional
    length buckets, collated (and pinned) ahead of the training thread by ``Collate``."""
    tc = config.train
    local = tc.shuffle == "local" and tc.shuffle_buffer > 0
    shuffle = {"local_shuffle_buffer_size": tc.shuffle_buffer if local else None,
               "local_shuffle_seed": tc.seed + epoch if local else None}
    window = tc.batch_size * (tc.length_bucketing or 1)
    multiple, rows = padding(tc)
    collate_fn = Collate(tasks, pad_id, layout, pin, tc.batch_size if tc.length_bucketing else None,
                         np.random.default_rng([tc.seed, epoch]), multiple, rows)
    # device="cpu": the batches are nested dicts Ray Data would not move; the loop copies them (non-blocking).
    for group in shard.iter_torch_batches(batch_size=window, collate_fn=collate_fn, device="cpu",
                                          prefetch_batches=1, **shuffle):
        yield from group


class EarlyStart:
    """An iterator whose first item is fetched from the start, in a daemon thread: iterating it later yields that
    item (waiting only for what is left of its fetch; an error in the fetch is raised there) and then the rest,
    from the caller's thread. One pass, like the iterator it wraps."""

    def __init__(self, items: Iterable[Any]):
        self._source = iter(items)
        self._first: list[Any] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fetch, name="tinyllm-first-batch", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            self._first.append(next(self._source))
        except StopIteration:
            pass
        except BaseException as err:  # noqa: BLE001 -- handed to the caller's thread, raised there
            self._error = err

    def __iter__(self) -> Iterator[Any]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        yield from self._first
        yield from self._source


def tokenized_dataset(examples: pa.Table, config: Config, tasks: list[str], layout: str) -> ray.data.Dataset:
    """Ray Data tokenisation of the text rows, materialised once and reused every epoch."""
    s = config.student
    dataset = (
        ray.data.from_arrow(examples)
        .map_batches(
            tokenize,
            fn_kwargs={"model": s.model, "tasks": tasks, "max_input_tokens": s.max_input_tokens,
                       "max_target_tokens": s.max_target_tokens, "trust_remote_code": s.trust_remote_code,
                       "layout": layout, "text": prompts.StudentText.of(s)},
            batch_size=256,
            batch_format="numpy",
        )
        .materialize()
    )
    # The per-epoch re-reads of a materialised dataset are instant; their progress bars are only noise.
    dataset.context.enable_progress_bars = False
    return dataset
