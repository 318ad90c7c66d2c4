"""The teacher stage: a lazy Ray Data pipeline ``questions -> prompts -> rationales`` per teacher.

``rationale_stage(questions, pool, teacher)`` adds the teacher-forcing prompt of every question (shots
drawn from ``pool``, the training split) with a stateless ``map_batches``, then runs ``TeacherWorker``,
a stateful class that loads the teacher once per actor, over a fixed actor pool of ``teacher.replicas``
actors, each reserving ``teacher.num_gpus`` GPUs and ``teacher.num_cpus`` CPUs. Nothing runs until the
dataset is consumed (``store.write_rationales`` writes it to Parquet).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import ray.data

from tinyllm_ray import metrics, prompts
from tinyllm_ray.config import TeacherConfig
from tinyllm_ray.data.schema import Question
from tinyllm_ray.teachers.engines import make_engine

# Rows per actor call: a few engine batches, so the engine can sort prompts by length within a call.
ENGINE_BATCHES_PER_CALL = 4


def add_prompts(batch: dict[str, np.ndarray], pool: list[dict[str, Any]], shots: int, seed: int) -> dict[str, Any]:
    pool_questions = [Question.from_row(r) for r in pool]
    out_prompts = []
    for row in _rows(batch):
        q = Question.from_row(row)
        out_prompts.append(prompts.teacher_prompt(q, prompts.pick_shots(q, pool_questions, shots, seed)))
    return {"id": batch["id"], "prompt": out_prompts}


def _rows(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    keys = list(batch)
    return [dict(zip(keys, values)) for values in zip(*(batch[k] for k in keys))]


class TeacherWorker:
    """Ray Data UDF: one teacher model per actor; prompts in, cleaned rationales out."""

    def __init__(self, teacher: TeacherConfig):
        self.teacher = teacher
        self.engine = make_engine(teacher)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        start = time.perf_counter()
        generations = self.engine.generate([str(p) for p in batch["prompt"]])
        cleaned = [prompts.clean_rationale(g.text) for g in generations]
        seconds = max(time.perf_counter() - start, 1e-9)
        metrics.teacher_tokens_per_second().set(sum(g.new_tokens for g in generations) / seconds,
                                                tags={"teacher": self.teacher.name})
        for outcome, n in Counter(reason or "accepted" for _, reason in cleaned).items():
            metrics.teacher_rationales().inc(n, tags={"teacher": self.teacher.name, "outcome": outcome})
        return {
            "id": batch["id"],
            "teacher": [self.teacher.name] * len(generations),
            "rationale": [text for text, _ in cleaned],
            "reject_reason": [reason or "" for _, reason in cleaned],
            "prompt_tokens": [g.prompt_tokens for g in generations],
            "new_tokens": [g.new_tokens for g in generations],
        }


def rationale_stage(questions: ray.data.Dataset, pool: list[Question], teacher: TeacherConfig) -> ray.data.Dataset:
    """Lazy dataset of one row per question: ``id, teacher, rationale, reject_reason, prompt_tokens, new_tokens``."""
    with_prompts = questions.map_batches(
        add_prompts,
        fn_kwargs={"pool": [q.to_row() for q in pool], "shots": teacher.shots, "seed": teacher.seed},
        batch_format="numpy",
    )
    return with_prompts.map_batches(
        TeacherWorker,
        fn_constructor_kwargs={"teacher": teacher},
        batch_size=teacher.batch_size * ENGINE_BATCHES_PER_CALL,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=teacher.replicas),
        num_gpus=teacher.num_gpus,
        num_cpus=teacher.num_cpus,
    )
