"""From questions and rationales to the student's tokenised multi-task rows, and from rows to batches.

One training row per question. For each task (``answer`` and one per teacher) it holds the encoder
input (task prefix + question + options) and the target (the answer text, or that teacher's
rationale, empty when the teacher has none for this question):

- ``example_table`` builds the text rows (driver side, pyarrow);
- ``Tokenize`` is the Ray Data ``map_batches`` UDF that turns them into ``ids__<task>`` /
  ``labels__<task>`` token lists (tokenisation never runs in the training loop);
- ``collate`` pads each task's rows dynamically (to the longest in the batch) for one forward per task,
  dropping the rows whose target is empty for that task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from transformers import AutoTokenizer

from tinyllm_ray import prompts
from tinyllm_ray.data.schema import Question
from tinyllm_ray.student.loss import IGNORE


def input_col(task: str) -> str:
    return f"input__{task}"


def target_col(task: str) -> str:
    return f"target__{task}"


def example_table(questions: Sequence[Question], rationales: dict[str, dict[str, str]]) -> pa.Table:
    """Text rows: ``id`` plus input/target per task; ``rationales`` maps teacher -> {question id: text}."""
    tasks = [prompts.ANSWER_TASK, *rationales]
    columns: dict[str, list[str]] = {"id": [q.id for q in questions]}
    for task in tasks:
        columns[input_col(task)] = [prompts.student_input(q, task) for q in questions]
    columns[target_col(prompts.ANSWER_TASK)] = [prompts.answer_target(q) for q in questions]
    for teacher, by_id in rationales.items():
        columns[target_col(teacher)] = [by_id.get(q.id, "") for q in questions]
    return pa.table(columns)


class Tokenize:
    """Ray Data UDF: text rows -> ``ids__<task>`` and ``labels__<task>`` (lists of token ids)."""

    def __init__(self, model: str, tasks: list[str], max_input_tokens: int, max_target_tokens: int,
                 trust_remote_code: bool = False):
        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        self.tasks, self.max_input, self.max_target = tasks, max_input_tokens, max_target_tokens

    def _encode(self, texts: np.ndarray, limit: int) -> list[np.ndarray]:
        ids = self.tokenizer([str(t) for t in texts], truncation=True, max_length=limit)["input_ids"]
        return [np.asarray(x, dtype=np.int32) for x in ids]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": batch["id"]}
        for task in self.tasks:
            out[f"ids__{task}"] = self._encode(batch[input_col(task)], self.max_input)
            targets = batch[target_col(task)]
            encoded = self._encode(targets, self.max_target)
            # An empty target means "no rationale from this teacher": no labels, not a lone EOS.
            out[f"labels__{task}"] = [e if str(t) else np.zeros(0, np.int32) for e, t in zip(encoded, targets)]
        return out


def _pad(seqs: list[np.ndarray], value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(batch: dict[str, np.ndarray], tasks: Sequence[str], pad_id: int) -> dict[str, Any]:
    """Per task: padded ``input_ids``, ``attention_mask``, ``labels`` over the rows that have a target.

    A task with no target in this batch maps to None. ``rows`` is the number of questions in the batch.
    """
    out: dict[str, Any] = {"rows": len(batch["id"])}
    for task in tasks:
        keep = [i for i, labels in enumerate(batch[f"labels__{task}"]) if len(labels)]
        if not keep:
            out[task] = None
            continue
        inputs = [batch[f"ids__{task}"][i] for i in keep]
        out[task] = {
            "input_ids": _pad(inputs, pad_id),
            "attention_mask": _pad([np.ones(len(s), np.int64) for s in inputs], 0),
            "labels": _pad([batch[f"labels__{task}"][i] for i in keep], IGNORE),
        }
    return out
