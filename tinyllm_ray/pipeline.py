"""The run: ``run(config)`` prepares it (``prepare.py``, no Ray), takes the run directory's lock (``run_lock.py``),
joins or starts Ray, then runs the stages in order: teachers -> student training (with the ``compare``
baselines beside it, or the loss-weight sweep) -> evaluation -> report. The only module that starts or joins Ray.

``run`` joins the cluster of ``ray job submit`` / ``RAY_ADDRESS`` / ``ray start`` when there is one and starts
a local Ray otherwise. Each stage (``workflow.py``) knows its key and whether its result is already in the run
directory, so a re-run of the same config reuses what finished; a failure deep inside Ray becomes one
``StageError`` naming the stage (``as_stage_error``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tinyllm_ray import console, markers, metrics, prompts, run_lock, runs, workflow
from tinyllm_ray.config import Config, ConfigError
from tinyllm_ray.connect import connect_ray
from tinyllm_ray.prepare import Prepared, describe_model, prepare
from tinyllm_ray.report import build_report, console_summary, write_report
from tinyllm_ray.resources import check_fits, cluster_nodes, resolve_replicas
from tinyllm_ray.results import StudentResult, TeacherResult
from tinyllm_ray.teachers import store
from tinyllm_ray.workflow import ExportStage, TeacherStage

# The stages' own modules (teachers.runner, student.*, compare, sweep) are imported where a stage starts:
# they pull in torch, transformers and Ray Data (seconds), and ``prepare`` rejects bad input first.

log = logging.getLogger("tinyllm_ray")
say = console.say


class StageError(RuntimeError):
    """A stage failed while running on Ray; the message names the stage and the root cause."""


class Interrupted(RuntimeError):
    """The run was stopped by Ctrl-C or SIGTERM (what ``ray job stop`` sends); the message says what is kept."""


@contextlib.contextmanager
def as_stage_error(name: str, run_dir: Path):
    """Turn a failure deep inside Ray into one ``StageError`` naming the stage; finished stages stay stored."""
    try:
        yield
    except (ConfigError, StageError):
        raise
    except Exception as err:  # noqa: BLE001 -- any failure inside Ray workers arrives here wrapped
        log.debug("stage %s failed", name, exc_info=True)
        raise StageError(
            f"{name} failed: {_root_message(err)}\n"
            f"Finished stages are kept in {run_dir}; re-running the same config resumes from them."
        ) from err


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit)\b(?::.*)?$")


def _root_message(err: BaseException) -> str:
    """The user's error out of Ray's wrapping: the last ``SomeError: ...`` line of the outermost error
    whose text carries one (Ray embeds the worker's traceback in its own exceptions), else its last line."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    for e in chain:
        lines = [line.strip() for line in _ANSI.sub("", str(e)).splitlines() if line.strip()]
        errors = [line for line in lines if _ERROR_LINE.match(line)]
        if errors:
            return errors[-1]
    lines = [line for line in str(chain[0]).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(chain[0]).__name__


def import_precomputed(p: Prepared, planned: TeacherStage) -> TeacherResult:
    """The authors' rationales of one teacher, stored like generated ones (no model runs), or reused."""
    info = planned.finished(p.run_dir)
    if not info:
        by_id = p.data.precomputed[planned.store_name]
        ids = list(by_id)
        table = pa.table({
            "id": ids,
            "teacher": [planned.store_name] * len(ids),
            "rationale": [by_id[i][0] for i in ids],
            "reject_reason": [by_id[i][1] for i in ids],
            "prompt_tokens": pa.array([0] * len(ids), pa.int64()),
            "new_tokens": pa.array([0] * len(ids), pa.int64()),
        })
        info = store.import_rationales(table, p.run_dir, planned.store_name, planned.key)
    log.info("teacher %s: %d precomputed rationales (%d rejected)", planned.store_name, info["rationales"],
             info["rejected"])
    return TeacherResult.of(planned.store_name, f"precomputed ({p.config.data.path})",
                            {**info, "evaluated": False, "not_evaluated_because": PRECOMPUTED_NOT_EVALUATED})


# Why the report shows no accuracy for a precomputed teacher.
PRECOMPUTED_NOT_EVALUATED = ("precomputed rationales were written with the gold answer in the prompt; the "
                             "teacher never answered by itself, so it has no accuracy")


def run_teachers(p: Prepared, planned: list[TeacherStage]) -> list[TeacherResult]:
    """The precomputed teachers, then the configured ones (side by side where the cluster has room); each
    configured teacher also answers valid and test itself unless ``evaluate: false``."""
    from tinyllm_ray.teachers import runner

    configured = {s.store_name: s for s in planned if s.teacher is not None}
    if configured:  # what each teacher will read, for the user to check (docs/teachers.md)
        (p.run_dir / "prompts").mkdir(exist_ok=True)
        for name, s in configured.items():
            (p.run_dir / "prompts" / f"{name}.txt").write_text(runner.example_prompt(s.teacher, p.splits["train"])
                                                                + "\n")
    results = [import_precomputed(p, s) for s in planned if s.teacher is None]
    for teacher, result in runner.run_all([s.teacher for s in configured.values()], p.splits["train"], p.run_dir,
                                          p.held_out, p.data.scorer, {n: s.key for n, s in configured.items()}):
        if isinstance(result, BaseException):
            with as_stage_error(configured[teacher.name].name, p.run_dir):
                raise result
        results.append(TeacherResult.of(teacher.name, describe_model(teacher.model), result))
    return results


def training_examples(p: Prepared) -> pa.Table:
    """The training questions with every teacher's accepted rationales (``student.batches.example_table``): joined
    by id in Arrow, and the question block held once (``Tokenize`` adds each task's prefix)."""
    from tinyllm_ray.student.batches import example_table

    return example_table(p.splits["train"], p.rationales(), prompts.StudentText.of(p.config.student),
                         task_inputs=False)


def run_student(p: Prepared, planned: ExportStage, baselines: Any = None) -> StudentResult:
    """Train and export the student (or reuse its export); ``baselines`` (``compare.Baselines``) still to train
    train in the same run as more arms, and the result then carries that run's result for them (``arms``)."""
    from tinyllm_ray.student.train import train_student

    c = p.config
    export_dir = planned.where(p.run_dir)
    arms = baselines.arms() if baselines is not None else {}
    info = planned.finished(p.run_dir)
    if info:
        log.info("student: reusing the trained student in %s", export_dir)
        if not arms:
            return StudentResult.of(info)
    # With the student finished and baselines not, the same run resumes from its latest checkpoint (the
    # last step: nothing left to train) and hands over the baselines' selections.
    with as_stage_error(f"student training ({describe_model(c.student.model)})", p.run_dir):
        examples = training_examples(p)
        trained = train_student(examples, c, p.run_dir, valid=p.splits.get("valid"), arms=arms)
    if info:
        return StudentResult.of(info, arms=trained)
    from tinyllm_ray.student.arms import checkpoint_problem
    from tinyllm_ray.student.batches import truncation

    # The export is copied only from a checkpoint that loads: the best on valid, else the latest.
    if (problem := checkpoint_problem(Path(trained["checkpoint"]), state=False)) is not None:
        latest = trained.get("latest")
        if latest is None or checkpoint_problem(Path(latest), state=False) is not None:
            raise StageError(f"student training: its best checkpoint does not load ({problem}) and neither does its "
                             f"latest; nothing was exported. Delete the damaged checkpoint and run again")
        log.warning("student: the best checkpoint on valid does not load (%s); exporting the latest, %s", problem,
                    latest)
        trained = {**trained, "checkpoint": latest, "best_metrics": trained.get("metrics", {})}

    best = trained["best_metrics"]
    result = StudentResult(key=planned.key, steps=trained["steps"], seconds=trained["seconds"],
                           final_metrics=trained["metrics"], best_step=best.get("step"),
                           best_valid_accuracy=best.get("valid_accuracy"), checkpoint=Path(trained["checkpoint"]).name,
                           truncated=truncation(examples, c), arms=trained if arms else None)
    # The shippable student is the best checkpoint on valid: weights and tokenizer, not the optimizer state.
    markers.export_checkpoint(trained["checkpoint"], export_dir, result.marker(), runs.ACCESS_MODES[c.output.access])
    log.info("student: exported the checkpoint of step %s (valid accuracy %s, %s) to %s", best.get("step"),
             best.get("valid_accuracy"), c.eval.select_on, export_dir)
    return result


def run_sweep(p: Prepared, planned: ExportStage) -> StudentResult:
    """The ``tune`` section's sweep in place of ``run_student``: the best trial on valid becomes the student."""
    from tinyllm_ray import sweep

    if info := planned.finished(p.run_dir):
        log.info("tune: reusing the swept student in %s", planned.where(p.run_dir))
        return StudentResult.of(info)
    with as_stage_error(f"loss-weight sweep ({p.config.student.model})", p.run_dir):
        return StudentResult.of(sweep.run_sweep(p.config, p.run_dir, training_examples(p), p.splits.get("valid", []),
                                                planned.key))


def baselines_to_train(p: Prepared) -> Any:
    """``compare: true``: the label-only and single-teacher students (same budget, ``compare.py``), the
    finished ones reused."""
    from tinyllm_ray import compare

    with as_stage_error("baselines (compare: true)", p.run_dir):
        return compare.Baselines.of(p.config, p.run_dir, workflow.baseline_stages(p.config))


def finish_baselines(p: Prepared, baselines: Any, trained: dict[str, Any] | None,
                     accuracy: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    with as_stage_error("baselines (compare: true)", p.run_dir):
        return baselines.finish(trained, accuracy)


def run_evaluation(p: Prepared, baselines: dict[str, str] | None = None
                   ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Score the exported student on valid and test (its answers go to ``predictions.parquet``), and in the
    same pass the baselines' checkpoints (``baselines``: by name); the accuracies of each."""
    from tinyllm_ray.student.arms import STUDENT_ARM
    from tinyllm_ray.student.evaluate import evaluate_models

    with as_stage_error("student evaluation", p.run_dir):
        scored = evaluate_models(p.held_out, {STUDENT_ARM: str(p.run_dir / runs.EXPORT_DIR), **(baselines or {})},
                                 p.config)
    accuracy, predictions = scored.pop(STUDENT_ARM)
    pq.write_table(predictions, p.run_dir / "predictions.parquet")
    for key, value in accuracy.items():
        scorer, _, split = key.rpartition("_")
        metrics.eval_accuracy().set(value, tags={"split": split, "scorer": scorer or "generate"})
    return accuracy, {name: acc for name, (acc, _) in scored.items()}


def run(config: Config) -> dict[str, Any]:
    """The whole workflow; returns the report (also written to ``<run>/report.json``)."""
    clock = Stopwatch()
    p = prepare(config)
    lock = run_lock.hold(p.run_dir)  # one driver per run directory: a second one stops here, before Ray
    try:
        run_log = console.attach_run_dir(p.run_dir)
        try:
            return _run(p, clock)
        except KeyboardInterrupt:
            log.info("interrupted", exc_info=True)  # where it was, for the log file only
            raise Interrupted(f"interrupted: finished stages, stored rationales and checkpoints are kept in "
                              f"{p.run_dir}; run the same command again to resume") from None
        finally:
            console.detach(run_log)
    finally:
        lock.release()


def _run(p: Prepared, clock: Stopwatch) -> dict[str, Any]:
    say(f"run {p.run_dir}: {p.config.data.dataset}, " + ", ".join(f"{s} {len(qs):,}" for s, qs in p.splits.items())
        + f" questions; full logs in {p.run_dir / 'logs'}")
    with as_stage_error("starting or joining Ray", p.run_dir):
        connect_ray(p.config)
    console.link_ray_logs(p.run_dir)
    console.serve_remote_progress()
    console.quiet_libraries()
    nodes = cluster_nodes()  # read once: the live nodes and what an autoscaler may add (None: unknown)
    p.config = resolve_replicas(p.config, nodes=nodes)  # ``replicas: auto``: the GPUs this cluster has
    check_fits(p.config, nodes)  # an actor no node can ever host would wait forever: fail now, naming the key
    clock.lap("setup_s")
    c = p.config
    if c.teachers or p.data.precomputed:
        say("teachers: " + ", ".join(f"{t.name} ({t.replicas} x {t.engine})" for t in c.teachers)
            + (f"{', ' if c.teachers else ''}precomputed {', '.join(p.data.precomputed)}" if p.data.precomputed
               else ""))
    teachers = run_teachers(p, workflow.teacher_stages(c, p.splits["train"], p.held_out, p.data.files,
                                                       list(p.data.precomputed)))
    clock.lap("generate_s")
    for t in teachers:
        say(t.line())
    planned = baselines_to_train(p) if c.compare else None  # ``compare`` refuses a sweep (config checks)
    say(f"student: {describe_model(c.student.model)}" + (", sweep of the loss weights" if c.tune else "")
        + (f", with {len(planned.to_train)} baseline(s) beside it" if planned is not None and planned.to_train
           else ""))
    student = (run_student(p, workflow.student_stage(c), planned)  # the baselines train in the student's run
               if c.tune is None else run_sweep(p, workflow.student_stage(c)))
    clock.lap("train_s")
    say(student.line(clock.laps["train_s"]))
    say("evaluation: valid and test, both scorers")
    accuracy, scored = run_evaluation(p, planned.checkpoints(student.arms) if planned is not None else None)
    clock.lap("eval_s")
    baselines = finish_baselines(p, planned, student.arms, scored) if planned is not None else None
    from tinyllm_ray.student.model import is_encoder_decoder

    architecture = "seq2seq" if is_encoder_decoder(c.student.model, c.student.trust_remote_code) else "causal"
    report = build_report(c, p.run_dir, p.data, teachers, student, accuracy, architecture, clock.timings(),
                          baselines)
    write_report(p.run_dir, report)
    from tinyllm_ray.publish import export_rationales

    shared = export_rationales(p.run_dir, c, p.splits["train"], p.rationales(), teachers)
    log.info("rationales as a dataset (datasets.load_dataset reads it): %s", shared)
    if console.board() is not None:
        console.board().close()
    print(console_summary(report), flush=True)
    return report


class Stopwatch:
    """Seconds between named points of the run, and the total."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name], self.last = round(now - self.last, 3), now

    def timings(self) -> dict[str, float]:
        return {**self.laps, "total_s": round(self.last - self.start, 3)}
