"""The teacher stage's input: prompt rows built while the stage reads them.

A million questions' prompts are gigabytes. ``PromptSource`` builds them a chunk at a time in a driver thread
(``chunks``: prompt-row tables, ``runner.prompt_rows``), drops the rows already stored, puts the rest in Ray's
object store and hands them over through a bounded ``ray.util.queue.Queue``; the dataset's read tasks
(``dataset()``) take them in turn. The queue's bound is the backpressure: the thread builds at most ``WINDOW``
chunks ahead of the teacher's replicas, so the driver and the object store hold a few chunks of prompts whatever
the number of questions, and the engines start on the first chunk.

The dataset's rows are *calls*: one row (``pack``) holds one actor call's prompt rows, and the stage runs with
blocks of one row (``ONE_CALL_PER_BLOCK``), so each call is its own block and Ray Data hands each to whichever
replica is free (a read task's output is otherwise merged into blocks of up to 128 MB: every call of a chunk would
go to one replica, in turn). ``unpack`` turns calls back into rows.

Written here rather than taken from Ray Data: its sources read files or take data that exists already
(``from_blocks``, ``from_arrow``; Ray 2.60 has no source fed by a running iterator), and building the prompts
anywhere but the driver would copy every question (they sample their examples from the whole training split)
into another process.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask
from ray.util.queue import Full, Queue

log = logging.getLogger(__name__)

# Rows a read task takes at least, and questions whose prompts the runner builds at once (``runner.PROMPT_CHUNK``).
CHUNK = 8192
# Chunks of prompt rows built ahead of the stage, waiting in the queue (a chunk: ``CHUNK``
# questions' rows, ~10 MB at 1.1 KB per row). Two keep the replicas fed while the next chunk is built.
WINDOW = 2
# What the read tasks take from the queue after the last rows (the planned tasks past them read nothing).
_END = "end"
# Ray Data's ``target_max_block_size`` for a stage whose rows are calls: any row is bigger, so a block is one call.
ONE_CALL_PER_BLOCK = 1
_CALL = "call"


def pack(calls: list[pa.Table]) -> pa.Table:
    """One row per call, holding the call's rows (a list of structs)."""
    table = pa.concat_tables(calls)
    offsets = np.cumsum([0] + [call.num_rows for call in calls], dtype=np.int32)
    rows = pa.StructArray.from_arrays([column.combine_chunks() for column in table.columns], table.column_names)
    return pa.table({_CALL: pa.ListArray.from_arrays(pa.array(offsets), rows)})


def unpack(calls: pa.Table) -> pa.Table:
    """The rows of the calls in ``calls`` (``pack``'s rows), in order."""
    return pa.Table.from_struct_array(calls.column(_CALL).combine_chunks().flatten())


def pending_rows(rows: pa.Table, done: set[str] | pa.Array) -> pa.Table:
    """The rows whose key is not in ``done`` (a set, or an Arrow array of the keys, made once for many calls)."""
    if len(done) == 0:
        return rows
    if not isinstance(done, pa.Array):
        done = pa.array(sorted(done), pa.string())
    return rows.filter(pc.invert(pc.is_in(rows.column("key"), value_set=done)))


class PromptSource:
    """The prompt rows of ``chunks`` (prompt-row tables, ``rows`` rows in all) not in ``done`` (stored keys), as
    the stage's input: ``with PromptSource(...) as source``, then ``has_pending()`` (waits for the first pending
    row or the input's end: no engine starts for a stage that has nothing to do), ``dataset()`` once, and
    ``keys()`` (every row's key, stored or not) when the stage is over.

    Blocks hold one actor call's rows (``size``), so every replica gets work; the rows a chunk leaves over
    (fewer than a call's) wait for the next chunk, so calls stay full. ``roles``: the rows' roles (the caller
    knows them from what it builds). ``chunk``: rows each read task takes at least.
    ``stored``/``pending``: rows found stored / queued for the stage so far."""

    def __init__(self, chunks: Iterable[pa.Table], rows: int, size: int, roles: Iterable[str],
                 done: set[str] | pa.Array | None = None, chunk: int = CHUNK, name: str = "prompts"):
        self.chunks, self.rows, self.size, self.chunk = chunks, rows, size, chunk
        self.roles, self.name = set(roles), name
        self.done = done if done is not None else set()
        self.stored = self.pending = 0
        self.error: BaseException | None = None
        self._first = threading.Event()  # a pending block is queued, or the input is spent
        self._finished = threading.Event()  # the input is spent (or failed, or the stage stopped)
        self._stop = threading.Event()
        self._keys: list[pa.ChunkedArray] = []
        self._queue: Queue | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def of_table(cls, table: pa.Table, size: int, chunk: int = CHUNK) -> PromptSource:
        """A source of the rows of ``table`` (benchmarks, tests)."""
        roles = pc.unique(table.column("role")).to_pylist() if table.num_rows else []
        return cls([table], table.num_rows, size, roles, chunk=chunk)

    def __enter__(self) -> Self:
        self._queue = Queue(maxsize=WINDOW, actor_options={"num_cpus": 0})
        self._thread = threading.Thread(target=self._produce, name=f"prompt-source-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._queue is not None:
            self._queue.shutdown(force=True)
        self._queue = None
        if self.error is not None and error is not self.error:
            # Building the prompts failed (the stage ran the rows built before): the caller gets that error.
            raise self.error from error

    def to_generate(self) -> int:
        """Rows the stage is to generate: every planned row but those found stored so far (exact once the input
        is spent): the progress total."""
        return self.rows - self.stored

    def has_pending(self) -> bool:
        """Whether any row is left to generate (waits for the first pending block or the input's end)."""
        self._first.wait()
        self._raise()
        return self.pending > 0

    def keys(self) -> list[pa.ChunkedArray]:
        """Every built row's key column, in order (waits for the input's end; raises what building raised)."""
        self._finished.wait()
        self._raise()
        return self._keys

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _produce(self) -> None:
        tail: pa.Table | None = None
        try:
            for table in self.chunks:
                if self._stop.is_set():
                    return
                self._keys.append(table.column("key"))
                rows = pending_rows(table, self.done)
                self.stored += table.num_rows - rows.num_rows
                if tail is not None:
                    rows = pa.concat_tables([tail, rows])
                full = rows.num_rows - rows.num_rows % self.size
                # The left-over rows, copied (``take``): a slice would keep the whole chunk's buffers alive.
                tail = rows.take(np.arange(full, rows.num_rows)) if full < rows.num_rows else None
                per_item = max(1, self.chunk // self.size) * self.size  # a queue item holds up to a chunk's rows
                for item in range(0, full, per_item):
                    self._put([rows.slice(start, self.size)
                               for start in range(item, min(item + per_item, full), self.size)])
            if tail is not None:
                self._put([tail])
            self._put(_END)
        except BaseException as err:  # raised in the driver's thread by has_pending/keys
            log.debug("building the prompts of %s failed", self.name, exc_info=True)
            self.error = err
            self._put(_END)  # the stage finishes the rows built before; ``keys`` raises this
        finally:
            self._finished.set()
            self._first.set()

    def _put(self, item: list[pa.Table] | str) -> None:
        """Queue some calls' rows (put in the object store now, ``pack``ed) or an end marker, waiting while the
        queue is full unless the stage has stopped."""
        if isinstance(item, list):
            self.pending += sum(call.num_rows for call in item)
            item = [ray.put(pack(item))]  # a list of references: the read task fetches the calls
            self._first.set()
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=1.0)
                return
            except Full:
                continue

    def dataset(self) -> ray.data.Dataset:
        """The stage's input dataset: read tasks of at least ``chunk`` rows each, enough for ``rows``, one at a
        time (so rows keep their order), that need no CPU: while the teachers' placement groups hold every CPU
        of a small cluster, a read task that needs one would never start. The stage starts reading while its
        replicas load (``stage.rationale_stage``), so the read task's worker process is up before the first call.
        (A reading actor instead made large stages several times slower: docs/benchmarks.md, Scale.)"""
        source = _QueueSource(self._queue, -(-self.rows // self.chunk) + 1, self.chunk)
        dataset = ray.data.read_datasource(source, num_cpus=0, concurrency=1, override_num_blocks=source.tasks)
        dataset.context.target_max_block_size = ONE_CALL_PER_BLOCK
        return dataset


class _QueueSource(Datasource):
    """Ray Data source whose read tasks take items from ``queue`` until they have read ``rows`` rows: an item is a
    list of block references (the task yields the blocks) or an end marker (the task puts it back for the next
    and stops; the tasks planned past the last rows read nothing)."""

    def __init__(self, queue: Queue, tasks: int, rows: int):
        super().__init__()
        self.queue, self.tasks, self.rows = queue, tasks, rows

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        queue = self.queue

        def task(rows: float) -> ReadTask:
            return ReadTask(functools.partial(_read, queue, rows), metadata)

        metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        # The last task reads to the end marker, whatever the planned rows: nothing queued is left unread.
        return [task(self.rows) for _ in range(self.tasks - 1)] + [task(math.inf)]

    def get_name(self) -> str:
        return "Prompts"


def _read(queue: Queue, rows: float) -> Iterator[pa.Table]:
    """One read task: items from ``queue`` until ``rows`` rows are read or the end marker comes."""
    read_rows = 0
    while read_rows < rows:
        item = queue.get()
        if item == _END:
            queue.put(item)
            return
        for ref in item:
            calls = ray.get(ref)
            read_rows += pc.sum(pc.list_value_length(calls.column(_CALL))).as_py() or 0
            for call in range(calls.num_rows):
                yield calls.slice(call, 1)
