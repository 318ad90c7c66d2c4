"""Using a trained student from the command line: ``tinyllm predict`` and ``tinyllm eval``.

    tinyllm predict RUN_DIR|MODEL_DIR --question "..." [--choices "a" "b" "c"] [--explain TEACHER]
    tinyllm predict RUN_DIR|MODEL_DIR --file questions.jsonl            # {"question"[, "choices", "id", "context"]}
    tinyllm eval MODEL_DIR --config X [--split valid --split test]      # both scorers, as the run's evaluation

``predict`` prints one JSON object per question: its generated answer and, for a question with options, the
option the student ranks most likely (rank classification always names one); a question without options is
an open one (a student of an open-answer task); with ``--explain`` the rationale it writes for
the teacher's task prefix (it was trained to write each teacher's rationales). The student is read the way
its run trained it: a run directory gives its ``config.yaml`` (input layout, token limits, teacher names); a
model directory inside a run directory (``<run>/student``, ``<run>/compare/<name>/student``) finds it too;
any other model directory takes ``--config`` or the defaults.

``eval`` scores an exported student on any dataset and split of a config with both scorers, through the same
Ray Data stage as the run's evaluation (``student/evaluate.py``), and prints the accuracies as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tinyllm_ray import console
from tinyllm_ray.config import Config, ConfigError, from_dict, load_config
from tinyllm_ray.data.schema import HELD_OUT, Question
from tinyllm_ray.input_checks import DIRECTORY, FILE, clip, require_problem


def resolve(path: Path, config_file: Path | None) -> tuple[Path, Config]:
    """(the student's model directory, the run config it was trained with) for a run or model directory."""
    from tinyllm_ray import runs

    if problem := require_problem(path, DIRECTORY):
        raise ConfigError(f"{path} {problem}")
    model_dir = path / runs.EXPORT_DIR if (path / runs.EXPORT_DIR / "config.json").is_file() else path
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{path} is neither a run directory with an exported student nor a model directory "
                          f"(no config.json)")
    if config_file is None:
        # <run>/student or <run>/compare/<name>/student: the run directory holds the config it was trained with.
        for parent in (model_dir.parent, *model_dir.parents[:3]):
            if runs.is_ours(parent) and (parent / runs.CONFIG_FILE).is_file():
                config_file = parent / runs.CONFIG_FILE
                break
    if config_file is None:
        return model_dir, from_dict({"student": {"model": str(model_dir)}}, source="defaults")
    config = load_config(config_file, [f"student.model={model_dir}"], check_paths=False)
    return model_dir, config


def read_questions(args: Any) -> list[Question]:
    """The questions of ``--question/--choices`` or of ``--file`` (JSONL), each checked with a clear message."""
    from tinyllm_ray.data.records import DataError, read_records

    if bool(args.question) == bool(args.file):
        raise ConfigError("give either --question (with --choices for a multiple-choice question), or --file")
    if args.question:
        return [_question({"question": args.question, "choices": args.choices or []}, "--question/--choices")]
    path = Path(args.file)
    if problem := require_problem(path, FILE):
        raise ConfigError(f"--file: {path} {problem}")
    try:  # the datasets' reader: JSON Lines (or a JSON array, Parquet), every line's limits checked
        out = [_question(row, f"{path}:{number}", number)  # a question without an id: its line (row) number
               for where, row in read_records(path) for number in [where.rpartition(" ")[2]]]
    except DataError as err:
        raise ConfigError(f"--file: {err}") from None
    if not out:
        raise ConfigError(f"--file: {path} holds no questions")
    return out


def _question(row: Any, where: str, default_id: str = "1") -> Question:
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: expected an object with a question (and choices), got {clip(row)}")
    question, choices = row.get("question"), row.get("choices") or []
    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"{where}: question must be a non-empty string, got {clip(question)}")
    if choices and (not isinstance(choices, list) or len(choices) < 2
                    or not all(isinstance(c, str) and c.strip() for c in choices)):
        raise ConfigError(f"{where}: choices must be a list of at least 2 non-empty strings (or left out for an "
                          f"open question), got {clip(choices)}")
    if len(set(choices)) != len(choices):
        raise ConfigError(f"{where}: choices repeat an option: {clip(choices)}")
    # The answer field is required by Question but unused here: the student sees only the question and options.
    return Question(id=str(row.get("id", default_id)), question=question, choices=tuple(choices),
                    answer=choices[0] if choices else "?", context=str(row.get("context") or ""))


def predict(args: Any) -> int:
    import transformers

    from tinyllm_ray.student.evaluate import load_scorer

    model_dir, config = resolve(Path(args.path), args.config)
    questions = read_questions(args)
    teachers = config.teacher_names()
    if args.explain is not None and args.explain not in teachers:
        raise ConfigError(f"--explain: the student learned the rationales of {', '.join(teachers) or 'no teacher'}, "
                          f"not {args.explain!r}")
    transformers.utils.logging.disable_progress_bar()
    scorer = load_scorer(str(model_dir), config, config.eval.batch_size)
    with_options = [q for q in questions if not q.is_open]
    ranked = dict(zip((q.id for q in with_options), scorer.rank(with_options) if with_options else []))
    generated = scorer.generate(questions)
    explained = (scorer.generate(questions, args.explain, config.student.max_target_tokens)
                 if args.explain else [None] * len(questions))
    for q, text, why in zip(questions, generated, explained, strict=True):
        out: dict[str, Any] = {"id": q.id}
        if not q.is_open:
            out.update(choice=q.choices[ranked[q.id]], index=ranked[q.id])
        out["generated"] = text
        if why is not None:
            out[f"explain_{args.explain}"] = why
        print(json.dumps(out, ensure_ascii=False), flush=True)
    return 0


def evaluate(args: Any) -> int:
    from tinyllm_ray import prepare
    from tinyllm_ray.connect import connect_ray
    from tinyllm_ray.data.load import load_data
    from tinyllm_ray.student.evaluate import evaluate as score

    model_dir, _ = resolve(Path(args.path), None)
    config = load_config(args.config, [*args.overrides, f"student.model={model_dir}"], check_paths=False)
    data = load_data(config.data, require_train=False)
    config = prepare.resolve_task(config, data)
    wanted = args.split or [s for s in HELD_OUT if data.splits.get(s)]
    missing = [s for s in wanted if not data.splits.get(s)]
    if missing:
        raise ConfigError(f"--split: dataset {config.data.dataset!r} has no {', '.join(missing)} questions here "
                          f"(it has: {', '.join(s for s, qs in data.splits.items() if qs)})")
    connect_ray(config)
    console.quiet_libraries()
    accuracy, _ = score({s: data.splits[s] for s in wanted}, str(model_dir), config)
    out = {"model": str(model_dir), "dataset": config.data.dataset, "scorer": data.scorer,
           "questions": {s: len(data.splits[s]) for s in wanted},
           **{f"{s}_accuracy": accuracy[s] for s in wanted},  # generate-and-match, the paper's scorer
           **{f"{s}_accuracy_rank": accuracy[f"rank_{s}"] for s in wanted if f"rank_{s}" in accuracy}}
    print(json.dumps(out), file=sys.stdout, flush=True)
    return 0
