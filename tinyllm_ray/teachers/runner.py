"""Runs every configured teacher over the training questions, and lets it answer valid and test itself:
prompts, placement, resume.

- **Prompts**: each question's prompt variants (``prompts.prompt_variants``) with in-context examples
  from ``shots`` (``random``, ``similar``, or ``generated``: the teacher first explains a pool of
  questions zero-shot, and those become its examples).
- **Evaluation** (``teacher.evaluate``, on by default): after its rationales, the teacher answers the valid
  and test questions itself with ``prompts.answer_prompt`` (no gold answer; the same examples mode, each
  example shown with the rationale the teacher wrote for it). Its answers are rows of roles ``valid`` and
  ``test`` in the same store; ``store.evaluation`` scores them.
- **Placement**: each teacher gets one placement group of ``replicas`` bundles (its GPUs and CPUs per
  replica). All teachers ask at once, each from its own driver thread: Ray grants the groups that fit
  side by side and the others wait until a finished teacher removes its group, so teachers run side
  by side when the cluster has room and in turn otherwise. Every group is removed when its teacher
  ends, before the student stage starts.
- **Resume**: every prompt row has a key (a hash of the teacher's generation settings and the row's
  prompts); rows whose key is already in the store are not generated again, and finished blocks are
  stored as they arrive. A complete teacher is reused whole when its stage key (settings + questions)
  matches.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group

from tinyllm_ray import answers as open_answers
from tinyllm_ray import console, prompts
from tinyllm_ray.config import TeacherConfig
from tinyllm_ray.data.schema import HELD_OUT, Question
from tinyllm_ray.keys import row_key, settings_key, teacher_key, teacher_keys
from tinyllm_ray.teachers import shots, source, store
from tinyllm_ray.teachers.source import PromptSource
from tinyllm_ray.teachers.stage import finished_calls, rationale_stage, rows_per_call

log = logging.getLogger("tinyllm_ray.teachers")

WAIT_LOG_SECONDS = 30.0
# Finished blocks are stored together, a part file per this many rows or seconds: one file per actor call (32
# rows with the HF engine's defaults) made a million-question resume scan tens of thousands of files. A crash
# loses at most these (plus the calls in flight).
APPEND_ROWS = 4096
APPEND_SECONDS = 10.0
APPEND_SECONDS_ENV = "TINYLLM_TEST_APPEND_SECONDS"  # testing hook: 0 stores every block as it arrives


def example_prompt(teacher: TeacherConfig, train: Sequence[Question]) -> str:
    """The prompt the teacher gets for the first training question, as it will see it (examples included;
    with ``generated`` examples, which exist only once the teacher wrote them, the zero-shot prompt)."""
    if teacher.shots_mode == "generated" and teacher.shots:
        return prompts.teacher_prompt(train[0], [], text=prompts.TeacherText.of(teacher.prompt))
    return _variants_of(teacher, train, train)(train[:1])[train[0].id][0]


def prompt_rows(variants: dict[str, list[str]], questions: Sequence[Question], role: str, settings: str) -> pa.Table:
    """Stage input rows: ``id, role, key, choices, answer, variants`` (key = settings + the row's prompts)."""
    return pa.table({
        "id": [q.id for q in questions],
        "role": [role] * len(questions),
        "key": [row_key(settings, role, variants[q.id]) for q in questions],
        "choices": [list(q.choices) for q in questions],
        "answer": [q.answer for q in questions],
        "variants": [variants[q.id] for q in questions],
    })


VariantsOf = Callable[[Sequence[Question]], dict[str, list[str]]]
# Questions whose prompts are built at once: the stage's input is built a chunk at a time while the stage reads it
# (``source.PromptSource``), so a million questions' prompts never sit in the driver or the object store.
PROMPT_CHUNK = source.CHUNK


def train_variants(teacher: TeacherConfig, train: Sequence[Question],
                   explained: dict[str, tuple[Question, str]] | None = None) -> dict[str, list[str]]:
    """Every training question's prompt variants, with examples from the teacher's ``shots_mode``."""
    return _variants_of(teacher, train, train, explained)(train)


def answer_variants(teacher: TeacherConfig, questions: Sequence[Question], train: Sequence[Question],
                    rationales: dict[str, str], explained: dict[str, tuple[Question, str]] | None = None
                    ) -> dict[str, list[str]]:
    """The answering prompts of held-out questions: examples from the training split by the teacher's
    ``shots_mode``, each shown with the rationale the teacher wrote for it (``rationales``, by id) if any."""
    return _variants_of(teacher, questions, train, explained, rationales)(questions)


def _variants_of(teacher: TeacherConfig, questions: Sequence[Question], train: Sequence[Question],
                 explained: dict[str, tuple[Question, str]] | None = None, rationales: dict[str, str] | None = None
                 ) -> VariantsOf:
    """The prompt variants of any part of ``questions`` (the same prompts the whole would give those questions):
    ``train_variants``, or with ``rationales`` (the teacher's own, by id) ``answer_variants``, whose examples
    show them. Examples come from ``train`` by ``shots_mode``; ``generated`` ones from ``explained``."""
    k, text = teacher.shots, prompts.TeacherText.of(teacher.prompt)
    variants = prompts.prompt_variants if rationales is None else prompts.answer_variants
    if teacher.shots_mode == "generated":
        def generated(part: Sequence[Question]) -> dict[str, list[str]]:
            picked = shots.generated_shots(part, explained or {}, k, teacher.seed)
            return {q.id: variants(q, *picked[q.id], text=text) for q in part}
        return generated
    similar = shots.similar_shots(questions, train, k) if teacher.shots_mode == "similar" else None  # ranks all once

    def shown(chosen: list[Question]) -> Sequence[str]:
        return () if rationales is None else [rationales.get(s.id, "") for s in chosen]

    def drawn(part: Sequence[Question]) -> dict[str, list[str]]:
        chosen = similar if similar is not None else shots.random_shots(part, train, k, teacher.seed)
        return {q.id: variants(q, chosen[q.id], shown(chosen[q.id]), text=text) for q in part}
    return drawn


def _row_chunks(variants_of: VariantsOf, questions: Sequence[Question], role: str, settings: str,
                chunk: int = PROMPT_CHUNK) -> Iterator[pa.Table]:
    """``prompt_rows(variants_of(questions), questions, ...)``, a chunk of questions at a time."""
    for start in range(0, len(questions), chunk):
        part = questions[start:start + chunk]
        yield prompt_rows(variants_of(part), part, role, settings)


@contextlib.contextmanager
def reserved(teacher: TeacherConfig) -> Iterator[PlacementGroup]:
    """A placement group of one bundle per replica, waited for (other teachers may hold the resources)
    and removed on the way out, whatever happens."""
    bundle = {"CPU": teacher.num_cpus, **({"GPU": teacher.num_gpus} if teacher.num_gpus else {})}
    group = placement_group([dict(bundle) for _ in range(teacher.replicas)], strategy="PACK",
                            name=f"tinyllm-teacher-{teacher.name}")
    try:
        start = time.perf_counter()
        while not group.wait(timeout_seconds=WAIT_LOG_SECONDS):
            log.info("teacher %s: waiting %.0f s for %d x %s (other teachers hold them)",
                     teacher.name, time.perf_counter() - start, teacher.replicas, bundle)
        yield group
    finally:
        remove_placement_group(group)


STOP = threading.Event()
"""Set by ``run_all`` when the driver is interrupted: each teacher's stage stops at its next finished call, after
storing what it finished (its engines go with its placement group)."""


class Stopped(RuntimeError):
    """A teacher's stage stopped because the driver was interrupted."""


def _generate(source: PromptSource, teacher: TeacherConfig, group: PlacementGroup, run_dir: Path,
              scorer: str = open_answers.CHOICE) -> int:
    """Run the stage over the pending rows of ``source`` and store the finished blocks as they arrive, a part file
    per ``APPEND_ROWS`` rows or ``APPEND_SECONDS`` seconds (whichever comes first, and whatever is left when the
    stage ends or fails); returns rows generated."""
    done = accepted = 0
    answering = source.roles <= set(HELD_OUT)  # only its own answers
    board, task = console.board(), f"teacher {teacher.name}" + (" answering" if answering else "")
    kept = "answers parsed" if answering else "accepted"
    if board is not None:
        board.start(task, source.to_generate(), "rows")
    dataset = rationale_stage(source, teacher, group, scorer=scorer)
    buffered: list[pa.Table] = []
    buffered_rows = 0
    flushed = time.monotonic()
    every_s = float(os.environ.get(APPEND_SECONDS_ENV, APPEND_SECONDS))

    def flush() -> None:
        nonlocal flushed, buffered_rows
        if buffered:
            store.append(run_dir, teacher.name, pa.concat_tables(buffered))
            buffered.clear()
        flushed, buffered_rows = time.monotonic(), 0

    try:
        for block in finished_calls(dataset):
            buffered.append(block)
            buffered_rows += block.num_rows
            done += block.num_rows
            accepted += block.num_rows - (pc.sum(pc.not_equal(block.column("reject_reason"), "")).as_py() or 0)
            if buffered_rows >= APPEND_ROWS or time.monotonic() - flushed >= every_s:
                flush()
            if board is not None:
                board.update(task, done=done, total=source.to_generate(), extra=f"{accepted:,} {kept}")
            if STOP.is_set():
                raise Stopped(f"teacher {teacher.name}: stopped after {done:,} rows (the driver was interrupted)")
    finally:
        flush()  # a failing stage keeps what it finished
        if board is not None:
            board.finish(task)
    if done < source.pending:
        # A read of the stage's input that Ray retried after its process died had taken its rows from the queue.
        raise RuntimeError(f"teacher {teacher.name}: {source.pending - done} of {source.pending} prompt rows never "
                           "reached a replica (a process reading the stage's input died); the rows generated are "
                           "stored: run again to generate the rest")
    return done


def run_teacher(teacher: TeacherConfig, train: Sequence[Question], run_dir: Path,
                answers: dict[str, Sequence[Question]] | None = None, scorer: str = open_answers.CHOICE,
                key: str | None = None) -> dict[str, Any]:
    """Generate (or reuse) one teacher's rationales for ``train`` and, when it is evaluated, its own answers to
    the ``answers`` splits (``{"valid": [...], "test": [...]}``, judged by ``scorer``); returns the stage
    figures. ``key``: its ``keys.teacher_key`` when the caller has it (``run_all`` makes every teacher's in one
    pass)."""
    answers = {s: qs for s, qs in (answers or {}).items() if qs} if teacher.evaluate else {}
    key = key or teacher_key(teacher, train, answers)
    info = store.finished(run_dir, teacher.name, key)
    if info:
        log.info("teacher %s: reusing %d stored rationales", teacher.name, info["rationales"])
        return {**info, **_scores(run_dir, teacher, answers, scorer), "generated_now": 0}
    start = time.perf_counter()
    settings = settings_key(teacher)
    generated = 0
    done = store.stored_keys(run_dir, teacher.name)
    with contextlib.ExitStack() as stack:
        group: PlacementGroup | None = None

        def run(chunks: Iterable[pa.Table], rows: int, roles: set[str], what: str) -> list[pa.ChunkedArray]:
            """Generate the rows of ``chunks`` (prompt-row tables, ``rows`` rows in all, of ``roles``) not stored
            yet; returns every row's key (the key columns, in Arrow). The prompts are built while the stage
            reads them (``PromptSource``): the driver never holds a teacher's whole prompt table, and no engine
            starts when every row is stored."""
            nonlocal group, generated
            with PromptSource(chunks, rows, rows_per_call(teacher), roles, done, name=teacher.name) as inputs:
                if inputs.has_pending():
                    if group is None:
                        group = stack.enter_context(reserved(teacher))
                    generated += _generate(inputs, teacher, group, run_dir, scorer)
                keys = inputs.keys()
            log.info("teacher %s: %s: %d queued for the engine, %d were stored", teacher.name, what,
                     inputs.pending, inputs.stored)
            return keys

        explained = None
        keys: list[pa.ChunkedArray] = []
        if teacher.shots_mode == "generated" and teacher.shots:
            pool = shots.pool_questions(train, teacher.shot_pool, teacher.seed)
            zero_shot = prompts.TeacherText.of(teacher.prompt)
            pool_rows = prompt_rows({q.id: [prompts.teacher_prompt(q, [], text=zero_shot)] for q in pool}, pool,
                                    "shot", settings)
            pool_keys = run([pool_rows], len(pool), {"shot"}, f"zero-shot rationales of {len(pool)} example questions")
            table = store.stored(run_dir, teacher.name)  # one read for both
            done = pc.unique(table.column("key"))
            explained = _explained(table, pool, pool_keys)
            del table
            log.info("teacher %s: %d of %d example rationales accepted", teacher.name, len(explained), len(pool))
            keys += pool_keys
        train_rows = _row_chunks(_variants_of(teacher, train, train, explained), train, "train", settings)

        def answer_rows(own: dict[str, str]) -> Iterator[pa.Table]:
            for split, questions in answers.items():
                yield from _row_chunks(_variants_of(teacher, questions, train, explained, own), questions,
                                       split, settings)

        # One pass per engine start where the answers do not need this pass's rationales: a teacher loads its
        # model once per pass (a minute or more for a large one on GPUs). Answers show the teacher's own
        # rationales of random or similar examples, so with such examples they wait for the training pass.
        asked = ", ".join(f"{len(qs)} {split}" for split, qs in answers.items())
        answered = sum(len(qs) for qs in answers.values())
        if answers and (not teacher.shots or teacher.shots_mode == "generated"):
            keys += run(itertools.chain(train_rows, answer_rows({})), len(train) + answered, {"train", *answers},
                        f"rationales of {len(train)} training questions and its own answers to {asked} questions")
        else:
            train_keys = run(train_rows, len(train), {"train"}, f"rationales of {len(train)} training questions")
            keys += train_keys
            if answers:
                own = _accepted(store.stored(run_dir, teacher.name, columns=_ACCEPTED_COLUMNS), train_keys)
                keys += run(answer_rows(own), answered, set(answers), f"its own answers to {asked} questions")
    extra = {"seconds": round(time.perf_counter() - start, 3), "generated_now": generated}
    if explained is not None:
        extra["example_rationales"] = len(explained)
    info = store.finish(run_dir, teacher.name, key, _key_array(keys), extra)
    return {**info, **_scores(run_dir, teacher, answers, scorer)}


def _scores(run_dir: Path, teacher: TeacherConfig, answers: dict[str, Sequence[Question]],
            scorer: str = open_answers.CHOICE) -> dict[str, Any]:
    """The teacher's own accuracy per split (``store.evaluation``), or why there is none."""
    if not teacher.evaluate:
        return {"evaluated": False, "not_evaluated_because": "teachers[].evaluate is false"}
    if not answers:
        return {"evaluated": False, "not_evaluated_because": "no valid or test questions"}
    scores = store.evaluation(store.read_table(run_dir, teacher.name, store.EVALUATION_COLUMNS), answers, scorer)
    log.info("teacher %s: own accuracy %s", teacher.name,
             ", ".join(f"{s} {scores[f'{s}_accuracy']:.3f}" for s in answers))
    return {"evaluated": True, **scores}


_ACCEPTED_COLUMNS = ("id", "key", "rationale", "reject_reason")


def _key_array(columns: Sequence[pa.ChunkedArray]) -> pa.ChunkedArray:
    """Key columns as one Arrow array of strings (a million keys as Python strings would be ~150 MB)."""
    return pa.chunked_array([c for column in columns for c in column.chunks], pa.string())


def _accepted(table: pa.Table, keys: Sequence[pa.ChunkedArray]) -> dict[str, str]:
    """The accepted rationales of the rows with ``keys`` (key columns), by question id (a later row of an id
    wins)."""
    reason = table.column("reject_reason")
    # Filtered in Arrow: only the accepted rows of these keys become Python strings.
    keep = pc.and_(pc.is_in(table.column("key"), value_set=pc.unique(_key_array(keys))),
                   pc.fill_null(pc.equal(reason, ""), True))
    rows = table.select(["id", "rationale"]).filter(keep)
    return dict(zip(rows.column("id").to_pylist(), rows.column("rationale").to_pylist()))


def _explained(table: pa.Table, pool: Sequence[Question], keys: Sequence[pa.ChunkedArray]
               ) -> dict[str, tuple[Question, str]]:
    """The accepted zero-shot rationales of the example pool (rows of ``table`` with ``keys``), by question id."""
    by_id = {q.id: q for q in pool}
    wanted = set(_key_array(keys).to_pylist())  # the pool's keys: a few dozen
    out = {}
    for i, key, text, reason in zip(*(table.column(c).to_pylist() for c in ("id", "key", "rationale", "reject_reason"))):
        if key in wanted and not reason and i in by_id:
            out[i] = (by_id[i], text)
    return {q.id: out[q.id] for q in pool if q.id in out}  # pool order: deterministic example choice


def run_all(teachers: Sequence[TeacherConfig], train: Sequence[Question], run_dir: Path,
            answers: dict[str, Sequence[Question]] | None = None, scorer: str = open_answers.CHOICE,
            stage_keys: dict[str, str] | None = None) -> list[tuple[TeacherConfig, dict[str, Any] | BaseException]]:
    """Every teacher, side by side where the cluster has room; one teacher's failure does not stop the
    others (their rows are stored). ``answers``: the held-out splits evaluated teachers answer themselves,
    judged by ``scorer`` (``choice``, or ``exact``/``numeric`` for open answers). ``stage_keys``: each teacher's
    ``keys.teacher_key`` by name when the caller has them (``workflow.teacher_stages``), else made here.
    Returns each teacher's figures or its exception, in config order."""
    if not teachers:
        return []
    results: dict[str, dict[str, Any] | BaseException] = {}
    lock = threading.Lock()
    keys = stage_keys or teacher_keys(teachers, train, {s: qs for s, qs in (answers or {}).items() if qs})

    def one(teacher: TeacherConfig) -> None:
        try:
            result: dict[str, Any] | BaseException = run_teacher(teacher, train, run_dir, answers, scorer,
                                                                 keys[teacher.name])
        except Exception as err:  # noqa: BLE001 -- reported per teacher by the caller
            log.debug("teacher %s failed", teacher.name, exc_info=True)
            result = err
        with lock:
            results[teacher.name] = result

    STOP.clear()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(teachers), thread_name_prefix="teacher") as pool:
        futures = [pool.submit(one, t) for t in teachers]
        try:
            concurrent.futures.wait(futures)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM in the driver: every teacher stores what it has and stops
            STOP.set()
            raise
    _check_released(teachers)
    return [(t, results[t.name]) for t in teachers]


def _check_released(teachers: Sequence[TeacherConfig]) -> None:
    """Warn when a teacher's placement group outlived it (Ray issue 64035 reports leaks with vLLM). Only this
    job's groups count (a group's id ends with its job's id): another job may run a same-named teacher."""
    names = {f"tinyllm-teacher-{t.name}" for t in teachers}
    job = ray.get_runtime_context().get_job_id()
    for pg_id, info in ray.util.placement_group_table().items():
        if pg_id.endswith(job) and info.get("name") in names and info.get("state") != "REMOVED":
            log.warning("placement group %s is still %s after its teacher ended", info["name"], info["state"])
