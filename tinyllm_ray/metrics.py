"""The project's metrics on the Ray dashboard (``ray.util.metrics``, exported with Ray's Prometheus metrics).

    ray_tinyllm_teacher_rationales_total{teacher, outcome}  rationales written: outcome = accepted or a reject reason
    ray_tinyllm_teacher_answers_total{teacher, split, outcome}  a teacher's own answers to valid/test questions:
                                                         outcome = correct, wrong, no_answer or prompt_too_long
    tinyllm_teacher_tokens_per_second{teacher}           generation speed of the last batch of a teacher actor
    tinyllm_train_loss{task}                             latest per-task loss of the student (rank 0)
    tinyllm_train_samples_per_second                     student training throughput (rank 0)
    tinyllm_eval_accuracy{split, scorer}                 student accuracy after evaluation

Each process creates the metrics it reports, once (``ray.util.metrics`` objects live in their process).
"""

from __future__ import annotations

import functools

from ray.util.metrics import Counter, Gauge


@functools.cache
def teacher_rationales() -> Counter:
    return Counter("tinyllm_teacher_rationales", "Rationales written by a teacher, by outcome",
                   tag_keys=("teacher", "outcome"))


@functools.cache
def teacher_answers() -> Counter:
    return Counter("tinyllm_teacher_answers", "A teacher's own answers to held-out questions, by split and outcome",
                   tag_keys=("teacher", "split", "outcome"))


@functools.cache
def teacher_tokens_per_second() -> Gauge:
    return Gauge("tinyllm_teacher_tokens_per_second", "New tokens per second of a teacher actor's last batch",
                 tag_keys=("teacher",))


@functools.cache
def train_loss() -> Gauge:
    return Gauge("tinyllm_train_loss", "Latest student loss per task", tag_keys=("task",))


@functools.cache
def train_samples_per_second() -> Gauge:
    return Gauge("tinyllm_train_samples_per_second", "Student training throughput (questions per second)")


@functools.cache
def eval_accuracy() -> Gauge:
    return Gauge("tinyllm_eval_accuracy", "Student accuracy by split and scorer", tag_keys=("split", "scorer"))
