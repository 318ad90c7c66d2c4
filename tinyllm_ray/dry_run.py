"""``tinyllm distill --dry-run``: what a run would do and cost, before it loads a model or writes a file.

``make_plan(config)`` runs every check a run starts with (config, data, run directory, model paths, the fit on
the cluster), then works out, from the data and the run directory's finished stages:

- the questions per split, and the run directory (new, or a resume reusing finished stages);
- the cluster it sees: the one of ``ray.address`` / ``RAY_ADDRESS`` (``ray job submit`` sets it) with what
  its ``ray up`` autoscaler may add, else this machine as a new local Ray would use it;
- per teacher: ``replicas: auto`` resolved, where its replicas would go (side by side with the teachers
  before it, or in turn after them), rows to generate (stored and finished ones are reused), prompt and new
  tokens, and hours from ``estimate.py`` (GPU-hours on GPUs; wall hours from a ``--throughput`` figure);
- the student: arms (the baselines of ``compare``), Train workers, steps, trained tokens, GPU-hours; or the
  sweep's trials and how many run at once; the evaluation.

``format_plan`` prints it; ``--dry-run --json`` prints the dict. Nothing is written and no weights are read
(model sizes come from config files, ``estimate.model_params``).
"""

from __future__ import annotations

import logging
import os
import statistics
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from tinyllm_ray import estimate, keys, prepare, prompts, workflow
from tinyllm_ray.config import Config, ConfigError, TeacherConfig, validate_models, with_absolute_paths
from tinyllm_ray.data.schema import HELD_OUT, SPLITS, Question
from tinyllm_ray.model_files import is_model_file
from tinyllm_ray.resources import (
    AUTOSCALER_CONFIG,
    NodeType,
    autoscaler_node_types,
    check_fits,
    cluster_capacity,
    resolve_replicas,
)
from tinyllm_ray.student.schedule import make_schedule


def make_plan(config: Config, throughput: dict[str, float] | None = None) -> dict[str, Any]:
    """The plan of ``config`` (see the module docstring); ``ConfigError``/``DataError`` on bad input, as a run.
    ``throughput``: generated tokens/s per replica by teacher name, and ``student``: trained tokens/s per GPU."""
    throughput = dict(throughput or {})
    unknown = sorted(set(throughput) - {t.name for t in config.teachers} - {"student"})
    if unknown:
        raise ConfigError(f"--throughput: no teacher named {', '.join(map(repr, unknown))} (teachers: "
                          f"{', '.join(t.name for t in config.teachers) or 'none'}; or 'student')")
    data, where = prepare.check(config)
    to_build = _tiny_models_to_build(config)
    if not to_build:
        validate_models(config)  # (tiny models still to build are made at the start of the run)
    c = with_absolute_paths(prepare.resolve_task(config, data))
    c = prepare.resolve_models(c, cached_only=True)  # converted GGUF files: the folders (and keys) a run uses
    to_convert = sorted({m for m in (c.student.model, *(t.model for t in c.teachers)) if is_model_file(m)})
    live, launchable, seen = _cluster(c)
    nodes = live + launchable
    capacity = cluster_capacity([n.resources for n in live], launchable)
    c = resolve_replicas(c, capacity, nodes)
    try:
        check_fits(c, nodes)
        fits = []
    except ConfigError as err:
        fits = str(err).splitlines()[1:-1]
    run_dir = where.path if where.resume else None
    splits = data.splits
    held_out = {s: splits[s] for s in HELD_OUT if splits.get(s)}
    # the stages a resume would find finished (every teacher's key in one pass over the questions); a new run
    # has none, and its keys are not worth a pass
    finished = _finished_teachers(c, splits["train"], held_out, run_dir) if run_dir else set()
    teachers = [_teacher(t, splits["train"], held_out, run_dir, throughput.get(t.name), t.name in finished)
                for t in c.teachers]
    place(c.teachers, teachers, nodes)
    plan = {
        "run_dir": str(where.path), "resume": where.resume,
        "data": {"dataset": c.data.dataset, "task": data.task, "scorer": data.scorer,
                 **{s: len(qs) for s, qs in splits.items()},
                 "rejected": len(data.rejects)},
        "tiny_models_to_build": to_build,
        "models_to_convert": to_convert,
        "cluster": {"seen": seen, "nodes": [_node(n) for n in nodes]},
        "does_not_fit": [line.strip() for line in fits],
        "precomputed_teachers": list(data.precomputed),
        "teachers": teachers,
        "student": _student(c, splits, run_dir, data.precomputed, capacity, throughput.get("student")),
        "evaluation": {"questions": {s: len(qs) for s, qs in held_out.items()}, "replicas": c.eval.replicas},
    }
    plan["total"] = _total(plan)
    return plan


def _tiny_models_to_build(config: Config) -> list[str]:
    """The models of ``tiny_models`` the config uses that are not built yet (the run builds them first)."""
    if not config.tiny_models:
        return []
    root = Path(config.tiny_models).expanduser().resolve()
    used = [config.student.model, *(t.model for t in config.teachers)]
    return sorted({m for m in used if Path(m).expanduser().resolve().parent == root
                   and not (Path(m).expanduser() / "config.json").is_file()})


def _cluster(config: Config) -> tuple[list[NodeType], list[NodeType], str]:
    """(live nodes, node types an autoscaler may add, what was seen). Joins the cluster of ``ray.address`` /
    ``RAY_ADDRESS`` when there is one (and leaves it); otherwise this machine, as a new local Ray would see it."""
    import ray

    address = config.ray.address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized() and not address:
        return [NodeType("this machine", _local_resources(config))], [], "local"
    joined = not ray.is_initialized()
    if joined:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    try:
        live = [NodeType(n.get("NodeManagerHostname", n["NodeID"]), dict(n.get("Resources", {})))
                for n in ray.nodes() if n.get("Alive")]
    finally:
        if joined:
            ray.shutdown()
    launchable = autoscaler_node_types(AUTOSCALER_CONFIG.expanduser()) or []
    return live, launchable, f"cluster at {address}" if address else "connected cluster"


def _local_resources(config: Config) -> dict[str, float]:
    # Ray's own accelerator detection (CUDA_VISIBLE_DEVICES, then the driver): what ray.init() would count.
    from ray._private.accelerators import get_accelerator_manager_for_resource

    gpus = get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators()
    return {"CPU": float(config.ray.num_cpus or os.cpu_count() or 1), "GPU": float(gpus)}


def _node(n: NodeType) -> dict[str, Any]:
    return {"name": n.name, "CPU": n.resources.get("CPU", 0.0), "GPU": n.resources.get("GPU", 0.0),
            "count": n.max_count}


def _finished_teachers(c: Config, train: list[Question], held_out: dict[str, list[Question]], run_dir: Path
                       ) -> set[str]:
    """The configured teachers whose stage finished in ``run_dir`` (as the run would find them)."""
    return {s.store_name for s in workflow.teacher_stages(c, train, held_out)
            if s.teacher is not None and s.finished(run_dir)}


def _teacher(t: TeacherConfig, train: list[Question], held_out: dict[str, list[Question]], run_dir: Path | None,
             given: float | None, complete: bool) -> dict[str, Any]:
    """One teacher's rows, tokens and hours; rows a finished (``complete``) or partly stored stage holds are not
    counted."""
    from tinyllm_ray.teachers import runner, store
    from tinyllm_ray.teachers.source import pending_rows

    answers = held_out if t.evaluate else {}
    rows = {"train": len(train), **{s: len(qs) for s, qs in answers.items()}}
    if t.shots_mode == "generated" and t.shots:
        rows["examples"] = min(t.shot_pool, len(train))
    stored = store.stored(run_dir, t.name, ["key", "new_tokens"]) if run_dir else None  # not the texts
    new_per_row, new_from = float(t.max_new_tokens), "max_new_tokens (an upper bound)"
    if stored is not None and stored.num_rows:
        new_per_row = statistics.fmean(stored.column("new_tokens").to_pylist())
        new_from = f"the mean of {stored.num_rows} stored rows"
    pending = dict.fromkeys(rows, 0) if complete else dict(rows)
    if not complete and stored is not None and stored.num_rows and not (t.shots_mode == "generated" and t.shots):
        # The training pass's prompts do not depend on generated text here: count its stored rows exactly.
        rows_now = runner.prompt_rows(runner.train_variants(t, train), train, "train", keys.settings_key(t))
        pending["train"] = len(pending_rows(rows_now, pc.unique(stored.column("key"))))
    prompt_chars = _prompt_chars(t, train, answers, pending, new_per_row)
    new_tokens = round(sum(pending.values()) * new_per_row)
    params, size_from = estimate.model_params(t.model, t.trust_remote_code)
    seconds = estimate.teacher_seconds(params, t.num_gpus, t.engine, estimate.tokens(prompt_chars), new_tokens,
                                       given)
    hours = None if seconds is None else seconds / 3600 / t.replicas
    return {
        "name": t.name, "model": t.model, "engine": t.engine, "replicas": t.replicas, "num_gpus": t.num_gpus,
        "num_cpus": t.num_cpus, "reused": complete, "rows": rows, "to_generate": pending,
        "prompt_tokens": estimate.tokens(prompt_chars), "new_tokens": new_tokens, "new_tokens_per_row_from": new_from,
        "params": params, "params_from": size_from,
        "throughput_from": "--throughput" if given else ("roofline (estimate.py)" if seconds is not None else None),
        "wall_hours": hours, "gpu_hours": hours * t.replicas * t.num_gpus if hours is not None and t.num_gpus
        else (0.0 if complete else None),
    }


def _prompt_chars(t: TeacherConfig, train: list[Question], answers: dict[str, list[Question]],
                  pending: dict[str, int], new_per_row: float) -> int:
    """Characters of the pending rows' prompts: each question's block once per example and itself, the
    instruction, and an example rationale of the expected length per shot where the prompt shows one."""
    if not any(pending.values()):
        return 0
    shown = round(new_per_row * estimate.CHARS_PER_TOKEN)
    text = prompts.TeacherText.of(t.prompt)
    fixed = len(text.instruction) + len(text.explain_request) + len(text.rationale_lead) + 30
    total = 0
    for role, n in pending.items():
        questions = train if role in ("train", "examples") else answers[role]
        if not n or not questions:
            continue
        block = statistics.fmean(len(prompts.question_block(q)) for q in questions[:1000])
        shots = 0 if role == "examples" else t.shots
        rationale = shown if (role in answers or t.shots_mode == "generated") else 0
        total += round(n * (fixed + block * (1 + shots) + shots * rationale))
    return total


def place(configs: list[TeacherConfig], teachers: list[dict[str, Any]], nodes: list[NodeType]) -> None:
    """Where each teacher's replicas go (``placement``), as Ray grants placement groups asked for at once: in
    config order, first fit; a teacher that does not fit beside the ones before it starts when one of them ends."""
    slots = [(n.name, n.resources) for n in nodes for _ in range(min(n.max_count, 64))]
    free = [dict(r) for _, r in slots]
    for t, out in zip(configs, teachers, strict=True):
        if out["reused"]:
            out["placement"] = "nothing to run (reused)"
            continue
        where = _first_fit(t, free)
        if where is None:
            alone = _first_fit(t, [dict(r) for _, r in slots])
            out["placement"] = ("in turn: starts when a teacher before it ends" if alone is not None
                                else "does not fit on this cluster")
            continue
        picked = [slots[i][0] for i in where]
        out["placement"] = "side by side: " + ", ".join(f"{picked.count(n)} on {n}" for n in dict.fromkeys(picked))


def _first_fit(t: TeacherConfig, free: list[dict[str, float]]) -> list[int] | None:
    """The node slot of each replica, taking their resources from ``free``; ``None`` (``free`` untouched) when
    not every replica fits."""
    need = {"CPU": t.num_cpus, "GPU": t.num_gpus}
    trial, where = [dict(f) for f in free], []
    for _ in range(t.replicas):
        i = next((i for i, f in enumerate(trial) if all(f.get(r, 0.0) >= v for r, v in need.items())), None)
        if i is None:
            return None
        for r, v in need.items():
            trial[i][r] = trial[i].get(r, 0.0) - v
        where.append(i)
    free[:] = trial
    return where


def _student(c: Config, splits: dict[str, list[Question]], run_dir: Path | None,
             precomputed: dict[str, dict[str, tuple[str, str]]], capacity: dict[str, float],
             given: float | None) -> dict[str, Any]:
    """The student's (or the sweep's) trainings still to run, their steps, trained tokens and GPU-hours."""
    train, tc = splits["train"], c.train
    steps = make_schedule(c, len(train)).total_steps
    questions = steps * tc.batch_size * tc.grad_accum_steps * tc.num_workers
    sample = train[:1000]
    block = estimate.tokens(statistics.fmean(len(prompts.question_block(q)) for q in sample))
    answer = estimate.tokens(statistics.fmean(len(prompts.answer_target(q)) for q in sample)) + 1
    rationale = {t.name: float(t.max_new_tokens) for t in c.teachers}
    rationale.update({name: estimate.tokens(statistics.fmean(len(text) for text, _ in list(by_id.values())[:1000]))
                      for name, by_id in precomputed.items() if by_id})
    # Every task reads the question (with its prefix) and writes its target, both truncated as in training.
    per_question = (1 + len(rationale)) * min(c.student.max_input_tokens, block + 4) + answer + sum(
        min(c.student.max_target_tokens, round(n)) for n in rationale.values())
    out: dict[str, Any] = {"model": c.student.model, "workers": tc.num_workers, "use_gpu": tc.use_gpu,
                           "steps": steps, "questions_trained": questions}
    reused = bool(run_dir and workflow.student_stage(c).finished(run_dir))
    if c.tune is not None:
        from tinyllm_ray.sweep.space import concurrent_trials, trial_count

        out.update(reused=reused, trials=trial_count(c), at_once=concurrent_trials(c, capacity))
        trainings = 0 if reused else out["trials"]
    else:
        arms = [] if reused else ["student"]
        if c.compare and not reused:  # baselines train in the student's run, as more arms on the same batches
            arms += [name for name, (_, stage) in workflow.baseline_stages(c).items()
                     if not (run_dir and stage.finished(run_dir))]
        out.update(reused=reused, arms=arms)
        trainings = len(arms)
    params, size_from = estimate.model_params(c.student.model, c.student.trust_remote_code)
    trained_tokens = trainings * questions * per_question
    shape = estimate.model_shape(c.student.model)
    source = min(c.student.max_input_tokens, block + 4)
    targets = [answer] + [min(c.student.max_target_tokens, round(n)) for n in rationale.values()]
    flops = None if shape is None else trainings * questions * estimate.step_flops(
        shape, 1, source, targets, one_encoder=tc.mode == "one_encoder")
    gpu_seconds = estimate.train_gpu_seconds(params, trained_tokens, given, flops) if (tc.use_gpu or given) else None
    out.update(flops=flops, flops_from="estimate.step_flops (its config.json)" if shape else "6 x params x tokens")
    out.update(trainings=trainings, trained_tokens=trained_tokens, params=params, params_from=size_from,
               gpu_hours=None if gpu_seconds is None else gpu_seconds / 3600,
               wall_hours=None if gpu_seconds is None else gpu_seconds / 3600 / (tc.num_workers if tc.use_gpu else 1))
    return out


def _total(plan: dict[str, Any]) -> dict[str, Any]:
    parts = [t["gpu_hours"] for t in plan["teachers"]] + [plan["student"]["gpu_hours"]]
    known = [p for p in parts if p is not None]
    return {"gpu_hours": sum(known) if known else None, "complete": len(known) == len(parts)}


def task_words(task: str, scorer: str) -> str:
    return "multiple choice" if task == "choice" else f"open answers, scored by {scorer} match"


def format_plan(plan: dict[str, Any], config_path: str = "") -> str:
    """The plan as a few lines for the console."""
    d, s = plan["data"], plan["student"]
    lines = [f"Plan{f' of {config_path}' if config_path else ''} (dry run: no model loaded, nothing written)",
             f"run dir      {plan['run_dir']} ({'resumes: finished stages are reused' if plan['resume'] else 'new'})",
             f"data         {d['dataset']} ({task_words(d['task'], d['scorer'])}): "
             + ", ".join(f"{k} {d[k]:,}" for k in SPLITS if k in d)
             + f"; {d['rejected']:,} rows rejected"]
    if plan["tiny_models_to_build"]:
        lines.append(f"tiny models  {len(plan['tiny_models_to_build'])} to build first (seconds)")
    if plan.get("models_to_convert"):
        lines.append(f"model files  {', '.join(plan['models_to_convert'])}: fetched and converted first (about 30 s "
                     f"for 100 MB of GGUF on 2 cores)")
    nodes = "; ".join(f"{n['name']}{' x' + str(n['count']) if n['count'] > 1 else ''}: {n['CPU']:g} CPU, "
                      f"{n['GPU']:g} GPU" for n in plan["cluster"]["nodes"])
    lines.append(f"cluster      {nodes}")
    if plan["precomputed_teachers"]:
        lines.append(f"precomputed  {', '.join(plan['precomputed_teachers'])} (imported, nothing generated)")
    for t in plan["teachers"]:
        todo = sum(t["to_generate"].values())
        head = (f"teacher      {t['name']} ({t['engine']}, {t['model']}): {t['replicas']} x "
                f"({t['num_cpus']:g} CPU, {t['num_gpus']:g} GPU); {t['placement']}")
        lines.append(head)
        if t["reused"]:
            lines.append("               complete: its rationales and answers are reused")
            continue
        rows = ", ".join(f"{role} {n:,}" for role, n in t["to_generate"].items())
        lines.append(f"               to generate {todo:,} rows ({rows}); ~{t['prompt_tokens']:,} prompt tokens, "
                     f"~{t['new_tokens']:,} new tokens ({t['new_tokens_per_row_from']})")
        lines.append(f"               {_hours(t)}")
    if "trials" in s:
        what = f"sweep of {s['trials']} trials, at most {s['at_once']} at once" + (" (reused)" if s["reused"] else "")
    else:
        what = "reused" if not s["trainings"] else f"{s['trainings']} to train ({', '.join(s['arms'])})"
    lines.append(f"student      {s['model']}: {what}; {s['workers']} Train worker(s){' on GPUs' if s['use_gpu'] else ''}, "
                 f"{s['steps']:,} steps, {s['questions_trained']:,} questions each, ~{s['trained_tokens']:,} "
                 f"tokens in all")
    lines.append(f"               {_hours(s)}")
    e = plan["evaluation"]
    lines.append("evaluation   " + ", ".join(f"{k} {v:,}" for k, v in e["questions"].items())
                 + f" questions, {e['replicas']} actor(s); every run")
    total = plan["total"]
    if total["gpu_hours"] is not None:
        lines.append(f"total        ~{total['gpu_hours']:,.2f} GPU-hours"
                     + ("" if total["complete"] else " (stages without an estimate not counted)"))
    for problem in plan["does_not_fit"]:
        lines.append(f"does not fit {problem}")
    return "\n".join(lines)


def _hours(part: dict[str, Any]) -> str:
    size = (f"{part['params'] / 1e9:.3g}B parameters ({part['params_from']})" if part.get("params")
            else f"size {part['params_from']}")
    if part.get("gpu_hours") is not None:
        wall = f", ~{part['wall_hours']:,.2f} h of wall time" if part.get("wall_hours") else ""
        return f"~{part['gpu_hours']:,.2f} GPU-hours{wall}; {size}"
    if part.get("wall_hours") is not None:
        return f"~{part['wall_hours']:,.2f} h of wall time (--throughput); {size}"
    return f"no GPU-hour estimate (runs on CPUs, or size unknown: give --throughput); {size}"
