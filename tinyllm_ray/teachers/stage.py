"""The teacher stage on Ray Data: prompt rows in, one rationale row per prompt row out.

``rationale_stage(source, teacher, placement_group)`` runs ``TeacherWorker`` (a stateful class that loads
the teacher once per actor) over a fixed actor pool of ``teacher.replicas`` actors, each in its own
bundle of the teacher's placement group (``teacher.num_gpus`` GPUs, ``teacher.num_cpus`` CPUs). Ray Data
restarts an actor that dies and retries its batch, so a row is produced once. A vLLM actor works on
``VLLM_CALLS_PER_ACTOR`` calls at once, all feeding its one engine, so its batch stays full across calls.

An input row is ``id, role, key, choices, answer, variants`` where ``variants`` are the row's
prompts from most to fewest in-context examples (``prompts.prompt_variants``). The worker submits the
first variant that fits the teacher's context next to ``max_new_tokens``; a row none of whose variants
fits is rejected as ``prompt_too_long`` and never reaches the engine (one long prompt must not abort a
vLLM batch). Output rows follow ``store.SCHEMA``.

Rows of role ``train`` or ``shot`` are rationales (``replies.clean_rationale``); rows of role ``valid`` or
``test`` are the teacher's own answers (``replies.parse_answer``): ``predicted`` is the option it named, -1
when it named none (``no_answer``); ``said`` is what its conclusion says (for an open question, the answer that
``answers.correct`` judges later: the scorer only tags the dashboard's counts here).
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data.block import BlockAccessor
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from tinyllm_ray import answers as open_answers
from tinyllm_ray import metrics, prompts, replies
from tinyllm_ray.config import TeacherConfig
from tinyllm_ray.data.schema import HELD_OUT, Question
from tinyllm_ray.teachers.engines import LENGTH, make_engine
from tinyllm_ray.teachers.source import PromptSource, pack, unpack

# Rows per actor call for the HF engine: a few engine batches, so it can sort prompts by length within
# a call. vLLM schedules continuously inside one call, so it gets ``batch_size`` rows per call.
ENGINE_BATCHES_PER_CALL = 4
# Calls a vLLM replica works on at once: while one call's last sequences decode, the next call's prompts are
# already in the engine's batch (``engines.ContinuousFeeder``), so the batch never drains between calls. The HF
# engine takes one call at a time: ``generate`` decodes a fixed batch to its end, and a second call in another
# thread would only contend with it for the same device.
VLLM_CALLS_PER_ACTOR = 3
# Roles of rows in which the teacher answers a held-out question itself (teacher evaluation).
ANSWER_ROLES = HELD_OUT
# How long the replicas of a teacher may take to load (a 70B model from network storage takes minutes).
REPLICA_START_TIMEOUT_S = 3600


@ray.remote(num_cpus=0)
class ReplicaGate:
    """Opens once all ``replicas`` replicas of a teacher have loaded, and stays open (a replica restarted after a
    crash passes at once). A replica waits at it at the end of its start-up, so the replicas become ready together
    and Ray Data hands the first calls out among all of them: the first one up would otherwise take as many calls
    as it may hold at once, which is the whole of a small stage. Ray Data's own wait (``wait_for_min_actors_s``)
    does the same but holds the whole execution, the prompts' read task included, until the replicas are up; the
    read task then only starts (a fresh worker process) once they are, and the first call waited for it.
    Written here: Ray has no barrier across actors (``ray.util.collective`` needs a communicator group)."""

    def __init__(self, replicas: int):
        self.waiting, self.opened = replicas, asyncio.Event()

    async def loaded(self) -> None:
        self.waiting -= 1
        if self.waiting <= 0:
            self.opened.set()
        await self.opened.wait()


def rows_per_call(teacher: TeacherConfig) -> int:
    size = teacher.prompts_per_batch()
    return size if teacher.engine == "vllm" else size * ENGINE_BATCHES_PER_CALL


def fit_prompts(
    variants: list[list[str]], encode: Callable[[list[str]], list[list[int]]], limit: int | None
) -> tuple[list[int | None], list[list[int]], list[int]]:
    """Per row: the index of its fullest variant within ``limit`` tokens (None when none fits), that
    variant's token ids, and the token count of the last variant tried. Variants are encoded level by
    level, only for the rows still looking, so a row that fits costs one encoding."""
    n = len(variants)
    chosen: list[int | None] = [None] * n
    ids: list[list[int]] = [[] for _ in range(n)]
    tried = [0] * n
    looking, level = list(range(n)), 0
    while looking:
        todo = [i for i in looking if level < len(variants[i])]
        if not todo:
            break
        looking = []
        for i, encoded in zip(todo, encode([variants[i][level] for i in todo])):
            tried[i] = len(encoded)
            if limit is None or len(encoded) <= limit:
                chosen[i], ids[i] = level, encoded
            else:
                looking.append(i)
        level += 1
    return chosen, ids, tried


class TeacherWorker:
    """Ray Data UDF: one teacher model per actor; prompt rows in, cleaned rationale rows out."""

    scorer = open_answers.CHOICE

    def __init__(self, teacher: TeacherConfig, scorer: str = open_answers.CHOICE):
        self.teacher, self.scorer = teacher, scorer
        self.engine = make_engine(teacher)
        context = ray.get_runtime_context()
        self.node = context.get_node_id()
        self.gpus = ",".join(str(g) for g in ray.get_gpu_ids())

    @property
    def lead(self) -> str:
        """The line the teacher continues (its ``prompt.rationale_lead``), stripped if it echoes it."""
        return prompts.TeacherText.of(self.teacher.prompt).rationale_lead

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        start = time.perf_counter()
        n = len(batch["id"])
        variants = [[str(text) for text in v] for v in batch["variants"]]
        chosen, prompt_ids, tried = fit_prompts(variants, self.engine.encode, self.engine.max_prompt_tokens)
        submit = [i for i in range(n) if chosen[i] is not None]
        generations = dict(zip(submit, self.engine.generate_ids([prompt_ids[i] for i in submit]))) if submit else {}

        out: dict[str, list] = {name: [] for name in ("rationale", "reject_reason", "raw", "prompt_tokens",
                                                      "new_tokens", "shots_used", "predicted", "said", "finish")}
        answers: Counter[tuple[str, str]] = Counter()
        for i in range(n):
            question = Question(id=str(batch["id"][i]), question="", choices=tuple(str(c) for c in batch["choices"][i]),
                                answer=str(batch["answer"][i]))
            answering = str(batch["role"][i]) in ANSWER_ROLES
            predicted: int | None = None
            said: str | None = None
            finish = ""
            if i not in generations:
                text, reason, raw, used, p_tokens, n_tokens = "", "prompt_too_long", "", 0, tried[i], 0
            else:
                g = generations[i]
                finish = g.finish
                if answering:  # the teacher answered by itself: what does it conclude (and which option is that)?
                    text, said = replies.parse_open_answer(g.text)
                    if said and not question.is_open:
                        predicted = replies.match_choice(said, question.choices)
                    reason = None if (said if question.is_open else predicted) is not None else "no_answer"
                else:
                    prompt = str(variants[i][chosen[i]])
                    text, reason = replies.clean_rationale(g.text, question, prompt, self.teacher.min_rationale_words,
                                                           self.lead, cut_off=g.finish == LENGTH)
                raw, p_tokens, n_tokens = g.text, g.prompt_tokens, g.new_tokens
                used = len(variants[i]) - 1 - chosen[i]
            if answering:
                right = (open_answers.correct(said or "", question.answer, self.scorer) if question.is_open
                         else predicted == question.answer_index)
                outcome = reason or ("correct" if right else "wrong")
                answers[(str(batch["role"][i]), outcome)] += 1
            row = (text, reason or "", raw, p_tokens, n_tokens, used, -1 if predicted is None else predicted, said or "",
                   finish)
            for name, value in zip(out, row):
                out[name].append(value)

        seconds = max(time.perf_counter() - start, 1e-9)
        tags = {"teacher": self.teacher.name}
        metrics.teacher_tokens_per_second().set(sum(out["new_tokens"]) / seconds, tags=tags)
        rationale_rows = [r for r, role in zip(out["reject_reason"], batch["role"]) if str(role) not in ANSWER_ROLES]
        for outcome, count in Counter(r or "accepted" for r in rationale_rows).items():
            metrics.teacher_rationales().inc(count, tags={**tags, "outcome": outcome})
        for (split, outcome), count in answers.items():
            metrics.teacher_answers().inc(count, tags={**tags, "split": split, "outcome": outcome})
        return {
            "id": batch["id"],
            "teacher": [self.teacher.name] * n,
            "role": batch["role"],
            "key": batch["key"],
            **out,
            "node": [self.node] * n,
            "gpus": [self.gpus] * n,
        }


def pool(teacher: TeacherConfig) -> ray.data.ActorPoolStrategy:
    """The teacher's fixed pool of ``replicas`` actors; a vLLM actor runs ``VLLM_CALLS_PER_ACTOR`` calls at once
    (in threads: Ray Data's ``enable_true_multi_threading``), all feeding its one engine."""
    if teacher.engine != "vllm":
        return ray.data.ActorPoolStrategy(size=teacher.replicas)
    return ray.data.ActorPoolStrategy(size=teacher.replicas, max_concurrent_calls_per_actor=VLLM_CALLS_PER_ACTOR,
                                      max_tasks_in_flight_per_actor=VLLM_CALLS_PER_ACTOR,
                                      enable_true_multi_threading=True)


def per_call(worker: type[TeacherWorker]) -> type[TeacherWorker]:
    """``worker`` over the stage's rows, each of which is one call (``source.pack``): it gets the call's rows as
    the numpy batch Ray Data would have made of them and returns its rows as one row again. Given a ``gate``
    (``ReplicaGate``), a replica that has loaded waits there for the others."""
    class PerCall(worker):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, gate: Any = None, **kwargs: Any):
            super().__init__(*args, **kwargs)
            if gate is not None:
                try:
                    ray.get(gate.loaded.remote(), timeout=REPLICA_START_TIMEOUT_S)
                except ray.exceptions.GetTimeoutError:
                    raise TimeoutError(f"teacher {self.teacher.name}: not all of its replicas loaded within "
                                       f"{REPLICA_START_TIMEOUT_S} s") from None
                except ray.exceptions.RayActorError:
                    pass  # the gate is gone (its node died): it only shares out the first calls, so go on

        def __call__(self, calls: pa.Table) -> pa.Table:  # type: ignore[override]
            batch = BlockAccessor.for_block(unpack(calls)).to_batch_format("numpy")
            return pack([BlockAccessor.batch_to_block(super().__call__(batch))])

    PerCall.__name__ = PerCall.__qualname__ = worker.__name__  # the operator's name on the dashboard
    return PerCall


def finished_calls(dataset: ray.data.Dataset) -> Iterator[pa.Table]:
    """The stage's output rows, a finished call at a time."""
    for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        yield unpack(block)


def rationale_stage(source: PromptSource, teacher: TeacherConfig, placement_group: PlacementGroup,
                    worker: type[TeacherWorker] = TeacherWorker, scorer: str = open_answers.CHOICE
                    ) -> ray.data.Dataset:
    """Lazy dataset of rationale rows (``store.SCHEMA``) for the prompt rows of ``source`` (built while the stage
    reads them, in blocks of one actor call's rows). ``worker`` may be a subclass of ``TeacherWorker`` (the
    benchmark's adds timings); ``scorer``: the data's (``choice``, or ``exact``/``numeric`` for open answers)."""
    gate = {"gate": ReplicaGate.remote(teacher.replicas)} if teacher.replicas > 1 else {}
    dataset = source.dataset().map_batches(
        per_call(worker),
        fn_constructor_kwargs={"teacher": teacher, **({"scorer": scorer} if scorer != open_answers.CHOICE else {}),
                               **gate},
        batch_size=1,  # one call (``source.pack``)
        batch_format="pyarrow",
        compute=pool(teacher),
        num_gpus=teacher.num_gpus,
        num_cpus=teacher.num_cpus,
    )
    # The whole execution runs in the teacher's placement group: Ray Data then budgets exactly the
    # group's bundles (not the whole cluster, which other teachers share) and schedules its actors there.
    # Ray 2.60 marks these two settings deprecated (for 2027) but they are still how it does this.
    in_group = PlacementGroupSchedulingStrategy(placement_group)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.context.scheduling_strategy = in_group
        dataset.context.scheduling_strategy_large_args = in_group
    # Reading starts with the replicas' start-up, not after it (Ray's default, set because a caller's context may
    # say otherwise): the replicas wait for each other at their ``ReplicaGate`` instead. A replica that fails to
    # load still fails the stage at once (``max_consecutive_actor_init_deaths``: 0).
    dataset.context.wait_for_min_actors_s = -1
    dataset.context.max_consecutive_actor_init_deaths = 0
    # Ray Data's per-operator resource reservation counts the actors' whole bundle as this operator's usage and,
    # once its budget (the group's) is spent, lets one task at a time through after the first round (measured on
    # Ray 2.60 with a placement group: 3 calls at once, then 1), so the engine's batch drained between calls again.
    # The group already bounds what the stage uses, and this dataset has no other operator to share it with.
    dataset.context.op_resource_reservation_enabled = False
    # Ray Data's high-memory detector warns on the console every 30 s that a replica uses gigabytes its actor did
    # not request: that is the engine's own, sized on purpose (vLLM's key/value cache: gpu_memory_utilization of
    # host memory on CPU), and the placement group already holds the replica's resources. (-1: off, its own doc.)
    dataset.context.issue_detectors_config.high_memory_detector_config.detection_time_interval_s = -1
    return dataset
