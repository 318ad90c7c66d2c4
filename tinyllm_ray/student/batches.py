"""From questions and rationales to the student's tokenised multi-task rows, and from rows to batches.

One training row per question. For each task (``answer`` and one per teacher) it holds the input
(task prefix + question + options) and the target (the answer text, or that teacher's rationale, empty
when the teacher has none for this question):

- ``example_table`` builds the text rows (driver side, in Arrow: the teachers' rationales joined by id);
- ``Tokenize`` turns them into token lists (tokenisation never runs in the training loop), through
  ``Encoder``, which the evaluation uses too; ``tokenize`` is its Ray Data ``map_batches`` task function;
- ``collate`` pads each task's rows dynamically (to the longest in the batch) for one forward per task,
  dropping the rows whose target is empty for that task; ``bucketed`` cuts a window of rows into batches of
  similar length.

Ray Data's side (tokenising the rows as a dataset, a Train worker's epoch of micro-batches) is ``feed.py``;
this module imports neither Ray nor pyarrow at load, so the GPU check runs it on a machine with only torch
and transformers (and pydantic).

Three layouts (``layout_of``):

``seq2seq``      ``ids__<task>`` = encoder input (prefix + question), ``labels__<task>`` = target + EOS.
``causal``       ``ids__<task>`` = prompt (prefix + question + ``prompts.CAUSAL_SEPARATOR``) + target + EOS,
                 ``labels__<task>`` = the same with every prompt token set to ``IGNORE`` (loss on the target only).
``one_encoder``  ``ids__question`` = the question alone, encoded once for every task;
                 ``dec__<task>`` = decoder start + task marker (``predict: ``...) + target[:-1] and
                 ``labels__<task>`` = ``IGNORE`` over the marker + target + EOS.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from tinyllm_ray import prompts
from tinyllm_ray.config import Config
from tinyllm_ray.data.schema import Question
from tinyllm_ray.devices import is_encoder_decoder
from tinyllm_ray.student.loss import IGNORE

if TYPE_CHECKING:
    import pyarrow as pa

QUESTION = "question"  # the one-encoder layout's shared encoder input
LAYOUTS = ("seq2seq", "causal", "one_encoder")


def input_col(task: str) -> str:
    return f"input__{task}"


def target_col(task: str) -> str:
    return f"target__{task}"


def task_marker(task: str, text: prompts.StudentText = prompts.STUDENT_TEXT) -> str:
    """The task prefix: ``predict: `` or ``explain_<teacher>: `` (decoder side in the one-encoder layout)."""
    return text.prefix(task)


def layout_of(encoder_decoder: bool, mode: str) -> str:
    if not encoder_decoder:
        if mode == "one_encoder":
            raise ValueError("train.mode one_encoder needs an encoder-decoder student")
        return "causal"
    return "one_encoder" if mode == "one_encoder" else "seq2seq"


# Questions whose question blocks are built at once: the Python strings of one chunk only, then Arrow.
EXAMPLE_CHUNK = 65_536


def example_table(questions: Sequence[Question], rationales: Mapping[str, Mapping[str, str]],
                  text: prompts.StudentText = prompts.STUDENT_TEXT, task_inputs: bool = True) -> pa.Table:
    """Text rows: ``id``, the bare question block, plus input/target per task; ``rationales`` maps teacher ->
    {question id: text} (a ``store.Rationales`` is joined in Arrow); ``text``: the task prefixes.

    ``task_inputs=False`` leaves out the input per task (prefix + question block, the block again for every
    task): ``Tokenize`` then prefixes the question block itself, and the driver and the object store hold the
    block once (what ``pipeline.training_examples`` gives the student)."""
    import pyarrow as pa  # here: the GPU check (bench/gpu.py) imports this module where pyarrow may be absent
    import pyarrow.compute as pc

    tasks = [prompts.ANSWER_TASK, *rationales]
    ids = pa.array([q.id for q in questions], pa.string())
    targets = {teacher: pc.fill_null(rationale_of(ids, by_id), "") for teacher, by_id in rationales.items()}
    parts = []
    for start in range(0, max(len(questions), 1), EXAMPLE_CHUNK):
        part = questions[start:start + EXAMPLE_CHUNK]
        block = pa.array([prompts.question_block(q) for q in part], pa.string())
        columns = {"id": ids[start:start + len(part)], input_col(QUESTION): block}
        if task_inputs:  # prefix + block in Arrow (what ``prompts.student_input`` writes)
            for task in tasks:
                columns[input_col(task)] = pc.binary_join_element_wise(text.prefix(task), block, "")
        columns[target_col(prompts.ANSWER_TASK)] = pa.array([prompts.answer_target(q) for q in part], pa.string())
        for teacher, column in targets.items():
            columns[target_col(teacher)] = column[start:start + len(part)]
        parts.append(pa.table(columns))
    return pa.concat_tables(parts)  # zero-copy: the chunks are not combined (a copy of the whole table)


def rationale_of(ids: pa.Array | pa.ChunkedArray, by_id: Mapping[str, str]) -> pa.Array:
    """``by_id.get(i)`` for every id of ``ids``, null where there is none, joined in Arrow (``pc.index_in``);
    ``by_id``: a ``teachers.store.Rationales`` (its ``table`` is used as it is) or any mapping of id to text."""
    import pyarrow as pa  # here: the GPU check imports this module where pyarrow may be absent
    import pyarrow.compute as pc

    table = getattr(by_id, "table", None)
    if table is None:
        table = pa.table({"id": pa.array(list(by_id.keys()), pa.string()),
                          "rationale": pa.array(list(by_id.values()), pa.string())})
    return table.column("rationale").take(pc.index_in(ids, value_set=table.column("id"))).combine_chunks()


class Encoder:
    """Token ids of one layout: inputs, targets, and (ids, labels, decoder ids) per task row."""

    def __init__(self, tokenizer: Any, layout: str, max_input_tokens: int, max_target_tokens: int,
                 decoder_start_token_id: int | None = None, text: prompts.StudentText = prompts.STUDENT_TEXT):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}")
        self.tok, self.layout = tokenizer, layout
        self.max_input, self.max_target = max_input_tokens, max_target_tokens
        self.decoder_start = decoder_start_token_id
        self.text = text  # the task prefixes
        if layout == "one_encoder" and decoder_start_token_id is None:
            raise ValueError("the one-encoder layout needs the model's decoder_start_token_id")

    def _ids(self, texts: Sequence[str], limit: int, special: bool = True) -> list[np.ndarray]:
        ids = self.tok([str(t) for t in texts], truncation=True, max_length=limit, add_special_tokens=special)
        return [np.asarray(x, dtype=np.int32) for x in ids["input_ids"]]

    def sources(self, task_inputs: Sequence[str]) -> list[np.ndarray]:
        """Encoder inputs (seq2seq, one-encoder: pass the bare question) or causal prompts."""
        if self.layout == "causal":
            return self._ids([t + prompts.CAUSAL_SEPARATOR for t in task_inputs], self.max_input)
        return self._ids(task_inputs, self.max_input)

    def targets(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Target ids ending in EOS (an empty text gives no ids: no target)."""
        if self.layout == "causal":  # causal tokenizers add BOS, not EOS: add EOS by hand
            ids = self._ids(texts, self.max_target - 1, special=False)
            out = [np.append(x, np.int32(self.tok.eos_token_id)) for x in ids]
        else:
            out = self._ids(texts, self.max_target)
        return [x if str(t) else np.zeros(0, np.int32) for x, t in zip(out, texts)]

    def cut(self, task_inputs: Sequence[str], texts: Sequence[str]) -> tuple[int, int]:
        """How many inputs and how many (non-empty) targets of these rows ``sources`` and ``targets`` cut to the
        token limits (what the student never sees of a long question or a long rationale)."""
        lengths = self.tok([str(t) for t in task_inputs], add_special_tokens=True)["input_ids"]
        extra = len(self.tok(prompts.CAUSAL_SEPARATOR, add_special_tokens=False)["input_ids"]) \
            if self.layout == "causal" else 0
        inputs = sum(len(x) + extra > self.max_input for x in lengths)
        given = [str(t) for t in texts if str(t)]
        special = self.layout != "causal"  # seq2seq tokenizers add the EOS; causal targets get it by hand
        target_lengths = self.tok(given, add_special_tokens=special)["input_ids"] if given else []
        targets = sum(len(x) + (not special) > self.max_target for x in target_lengths)
        return inputs, targets

    def marker(self, task: str) -> np.ndarray:
        return np.asarray(self.tok(task_marker(task, self.text).strip(), add_special_tokens=False)["input_ids"],
                          np.int32)

    def rows(self, task: str, sources: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> dict[str, list]:
        """``ids`` / ``labels`` (and ``dec`` for one-encoder) for one task; a row without target gets empty labels."""
        empty = np.zeros(0, np.int32)
        if self.layout == "seq2seq":
            return {"ids": list(sources), "labels": list(targets)}
        if self.layout == "causal":
            ids = [np.concatenate([s, t]) if len(t) else s for s, t in zip(sources, targets)]
            labels = [np.concatenate([np.full(len(s), IGNORE, np.int32), t]) if len(t) else empty
                      for s, t in zip(sources, targets)]
            return {"ids": ids, "labels": labels}
        marker = self.marker(task)
        start = np.asarray([self.decoder_start], np.int32)
        dec = [np.concatenate([start, marker, t[:-1]]) if len(t) else empty for t in targets]
        labels = [np.concatenate([np.full(len(marker), IGNORE, np.int32), t]) if len(t) else empty for t in targets]
        return {"dec": dec, "labels": labels}


class Tokenize:
    """Ray Data UDF: text rows -> the token-list columns of ``layout`` (see the module docstring)."""

    def __init__(self, model: str, tasks: list[str], max_input_tokens: int, max_target_tokens: int,
                 trust_remote_code: bool = False, layout: str = "seq2seq",
                 text: prompts.StudentText = prompts.STUDENT_TEXT):
        tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        start = None
        if layout == "one_encoder":
            start = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code).decoder_start_token_id
        self.encoder = Encoder(tokenizer, layout, max_input_tokens, max_target_tokens, start, text)
        self.tasks = tasks

    def inputs(self, batch: dict[str, np.ndarray], task: str) -> Sequence[str]:
        """The task's inputs: its ``input__<task>`` column, or (rows of ``example_table(..., task_inputs=False)``)
        the task prefix of ``text`` + the question block."""
        if input_col(task) in batch:
            return batch[input_col(task)]
        prefix = self.encoder.text.prefix(task)
        return [prefix + str(block) for block in batch[input_col(QUESTION)]]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": batch["id"]}
        enc = self.encoder
        if enc.layout == "one_encoder":
            out[f"ids__{QUESTION}"] = enc.sources(batch[input_col(QUESTION)])
        for task in self.tasks:
            sources = None if enc.layout == "one_encoder" else enc.sources(self.inputs(batch, task))
            for key, values in enc.rows(task, sources or [], enc.targets(batch[target_col(task)])).items():
                out[f"{key}__{task}"] = values
        return out


@functools.lru_cache(maxsize=4)
def _tokenizer_udf(model: str, tasks: tuple[str, ...], max_input_tokens: int, max_target_tokens: int,
                   trust_remote_code: bool, layout: str, changed: tuple[int, ...],
                   text: prompts.StudentText = prompts.STUDENT_TEXT) -> Tokenize:
    return Tokenize(model, list(tasks), max_input_tokens, max_target_tokens, trust_remote_code, layout, text)


def tokenize(batch: dict[str, np.ndarray], model: str, tasks: Sequence[str], max_input_tokens: int,
             max_target_tokens: int, trust_remote_code: bool = False, layout: str = "seq2seq",
             text: prompts.StudentText = prompts.STUDENT_TEXT) -> dict[str, Any]:
    """``Tokenize`` as a Ray Data task function. Tasks, not an actor pool: Ray reuses its task worker processes,
    which keep the tokenizer (cached here) and the imports of the previous runs, where an actor is a new process
    that imports transformers again (seconds, every training run); and tasks spread over the whole cluster."""
    # A model dir rebuilt in place (same path, new files) must not reuse the cached tokenizer.
    changed = tuple(p.stat().st_mtime_ns for p in sorted(Path(model).glob("*token*"))) if Path(model).is_dir() else ()
    udf = _tokenizer_udf(model, tuple(tasks), max_input_tokens, max_target_tokens, trust_remote_code, layout,
                         changed, text)
    return udf(batch)


def _pad(seqs: list[np.ndarray], value: int, multiple: int = 0) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    if multiple:
        width = -(-width // multiple) * multiple
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def _mask(seqs: list[np.ndarray], multiple: int = 0) -> torch.Tensor:
    return _pad([np.ones(len(s), np.int64) for s in seqs], 0, multiple)


def collate(batch: dict[str, np.ndarray], tasks: Sequence[str], pad_id: int, layout: str = "seq2seq",
            multiple: int = 0, rows: int | None = None) -> dict[str, Any]:
    """Per task, over the rows that have a target: padded ``input_ids``, ``attention_mask``, ``labels``
    (one-encoder: ``rows`` (their index in the batch), ``decoder_input_ids``, ``labels``, and the shared
    ``question`` inputs). A task with no target in this batch maps to None; ``rows`` = questions in the batch.

    Fixed shapes for a compiled student (``train.compile``): ``multiple`` rounds every padded length up to a
    multiple of it, and ``rows`` fills each task (and the one-encoder questions) up to that many rows with filler
    rows (one pad token attended, every label ``IGNORE``), which add nothing to the loss; ``rows`` stays the
    number of real questions. With ``rows`` a task without any target in the batch is all filler rows, not None:
    every micro-batch makes the same forward calls (what FSDP's ranks need, and fewer compiled graphs)."""
    n = len(batch["id"])
    fill = max(0, (rows or 0) - n)
    filler = np.asarray([pad_id], np.int64)
    out: dict[str, Any] = {"rows": n}
    if layout == "one_encoder":
        questions = list(batch[f"ids__{QUESTION}"]) + [filler] * fill
        out[QUESTION] = {"input_ids": _pad(questions, pad_id, multiple), "attention_mask": _mask(questions, multiple)}
    for task in tasks:
        keep = [i for i, labels in enumerate(batch[f"labels__{task}"]) if len(labels)]
        if not keep and not rows:
            out[task] = None
            continue
        extra = max(0, (rows or 0) - len(keep))
        labels = _pad([batch[f"labels__{task}"][i] for i in keep] + [np.full(1, IGNORE)] * extra, IGNORE, multiple)
        if layout == "one_encoder":
            out[task] = {"rows": torch.as_tensor(keep + [0] * extra, dtype=torch.long),
                         "decoder_input_ids": _pad([batch[f"dec__{task}"][i] for i in keep] + [filler] * extra,
                                                   pad_id, multiple),
                         "labels": labels}
            continue
        inputs = [batch[f"ids__{task}"][i] for i in keep] + [filler] * extra
        out[task] = {"input_ids": _pad(inputs, pad_id, multiple), "attention_mask": _mask(inputs, multiple),
                     "labels": labels}
    return out


# ``train.compile``'s length multiple when ``train.pad_multiple`` is 0: few enough shapes for a handful of graphs,
# little enough padding (under 64 tokens a row).
COMPILE_PAD_MULTIPLE = 64


def padding(tc: Any) -> tuple[int, int | None]:
    """``collate``'s (length multiple, rows per task) for a ``TrainConfig``: fixed shapes when compiling; under
    FSDP (``strategy: fsdp``) every task in every micro-batch (filler rows for a task without targets), since
    FSDP's ranks must all make the same forward calls (each gathers every sharded block together)."""
    compiled = tc.compile != "off"
    fixed_rows = compiled or tc.strategy == "fsdp"
    return tc.pad_multiple or (COMPILE_PAD_MULTIPLE if compiled else 0), tc.batch_size if fixed_rows else None


def row_lengths(batch: dict[str, np.ndarray], tasks: Sequence[str] | None = None) -> np.ndarray:
    """Tokens per row over the token columns of ``tasks`` (all when None; the key length bucketing sorts on)."""
    used = None if tasks is None else {QUESTION, *tasks}
    columns = [k for k in batch if k.startswith(("ids__", "labels__"))
               and (used is None or k.partition("__")[2] in used)]
    n = len(batch["id"])
    return np.asarray([sum(len(batch[k][i]) for k in columns) for i in range(n)])


def bucketed(window: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator,
             tasks: Sequence[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Cut a window of rows into batches of similar length (sorted by ``row_lengths``), in a random order."""
    order = np.argsort(row_lengths(window, tasks), kind="stable")
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(chunks)
    return [{k: v[idx] for k, v in window.items()} for idx in chunks]


def student_layout(config: Config) -> str:
    return layout_of(is_encoder_decoder(config.student.model, config.student.trust_remote_code), config.train.mode)


# Rows per task whose truncation the student stage counts (the first ones of the table): enough for a share to a
# percent, cheap at a million questions.
TRUNCATION_SAMPLE = 20_000


def truncation(table: pa.Table, config: Config, sample: int = TRUNCATION_SAMPLE) -> dict[str, dict[str, int]]:
    """Per task, of the first ``sample`` training rows: ``rows`` checked, ``inputs_cut`` (prefix + question over
    ``student.max_input_tokens``), ``targets`` (rows with a target) and ``targets_cut`` (answers or rationales over
    ``student.max_target_tokens``), with the student's own tokenizer. ``table``: ``example_table``'s rows."""
    s = config.student
    tokenizer = AutoTokenizer.from_pretrained(s.model, trust_remote_code=s.trust_remote_code)
    layout = layout_of(is_encoder_decoder(s.model, s.trust_remote_code), config.train.mode)
    text = prompts.StudentText.of(s)
    encoder = Encoder(tokenizer, "seq2seq" if layout == "one_encoder" else layout, s.max_input_tokens,
                      s.max_target_tokens, text=text)
    rows = table.slice(0, sample)
    blocks = rows.column(input_col(QUESTION)).to_pylist()
    out = {}
    for task in [prompts.ANSWER_TASK, *config.teacher_names()]:
        if target_col(task) not in rows.column_names:
            continue
        targets = rows.column(target_col(task)).to_pylist()
        inputs = blocks if layout == "one_encoder" else [text.prefix(task) + b for b in blocks]
        inputs_cut, targets_cut = encoder.cut(inputs, targets)
        out[task] = {"rows": rows.num_rows, "inputs_cut": inputs_cut, "targets": sum(bool(t) for t in targets),
                     "targets_cut": targets_cut}
    return out
