"""What a finished run hands to others: the student's model card with the hub's metadata, and the rationales as
a Hugging Face dataset.

- ``with_hub_metadata(report, body)``: ``student/README.md`` through ``huggingface_hub``'s card API, with ``model-index``
  evaluation results (valid and test accuracy with both scorers), base model and tags in its YAML header, so
  uploading the student directory with the hub's own CLI (``hf upload <repo> runs/<name>/student``) gives a
  proper model page.
- ``export_rationales(...)``: ``<run>/dataset/``, the training questions with every teacher's accepted
  rationale (Parquet, ``data/train-00000-of-00001.parquet``) and a dataset card (teachers, prompt template,
  generation settings, acceptance) whose ``configs`` header lets ``datasets.load_dataset("<run>/dataset")`` (or
  the hub, once uploaded) read it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tinyllm_ray import prompts
from tinyllm_ray.config import Config, is_local_model
from tinyllm_ray.data.schema import Question
from tinyllm_ray.keys import GENERATION_FIELDS
from tinyllm_ray.results import TeacherResult

DATASET_DIR = "dataset"
TRAIN_FILE = "data/train-00000-of-00001.parquet"


def with_hub_metadata(report: dict[str, Any], body: str) -> str:
    """The model card: ``body`` (markdown) under a YAML header the hub reads (``model-index`` results)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    s, d = report["student"], report["dataset"]
    results = []
    open_task = d.get("task") == "open"
    task_type, task_name = ("question-answering", "Open-answer QA") if open_task else ("multiple-choice",
                                                                                      "Multiple-choice QA")
    generated = f"{d.get('scorer')} match" if open_task else "generate and match"
    for split, hub_split in (("valid", "validation"), ("test", "test")):
        for suffix, scorer in (("", generated), ("_rank", "rank classification")):
            value = s.get(f"{split}_accuracy{suffix}")
            if value is not None:
                results.append(EvalResult(task_type=task_type, task_name=task_name,
                                          dataset_type=d["name"], dataset_name=d["name"], dataset_split=hub_split,
                                          metric_type="accuracy", metric_name=f"accuracy ({scorer})",
                                          metric_value=round(float(value), 4)))
    data = ModelCardData(
        model_name=report["run_name"], library_name="transformers",
        base_model=(s.get("model_source") or {}).get("hub_id") or (None if is_local_model(s["model"]) else s["model"]),
        pipeline_tag="text-generation" if s.get("architecture") == "causal" else "text2text-generation",
        tags=["tinyllm", "distillation", "knowledge-distillation", "rationale-distillation"],
        eval_results=results or None,
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


# Training questions written at once (a row group of the exported file): only their Python lists are built together.
EXPORT_CHUNK = 65_536


def export_rationales(run_dir: Path, config: Config, train: list[Question], rationales: Mapping[str, Mapping[str, str]],
                      teachers: list[TeacherResult]) -> Path:
    """Write ``<run>/dataset/`` (Parquet and its card) and return it; ``rationales``: teacher -> {id: text} (a
    ``store.Rationales`` is joined by id in Arrow). Written a chunk of questions at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tinyllm_ray.student.batches import rationale_of

    out = run_dir / DATASET_DIR
    (out / TRAIN_FILE).parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.string()), ("question", pa.string()), ("context", pa.string()),
                        ("choices", pa.list_(pa.string())), ("answer", pa.string()), ("answer_index", pa.int32()),
                        *((f"rationale_{name}", pa.string()) for name in rationales)])
    ids = pa.array([q.id for q in train], pa.string())
    by_teacher = [rationale_of(ids, by_id) for by_id in rationales.values()]  # null: rejected
    with pq.ParquetWriter(out / TRAIN_FILE, schema) as writer:
        for start in range(0, max(len(train), 1), EXPORT_CHUNK):
            part = train[start:start + EXPORT_CHUNK]
            columns = [ids[start:start + len(part)], [q.question for q in part], [q.context for q in part],
                       [list(q.choices) for q in part], [q.answer for q in part],
                       [None if q.is_open else q.answer_index for q in part],
                       *(column[start:start + len(part)] for column in by_teacher)]
            writer.write_table(pa.table(columns, schema=schema))
    (out / "README.md").write_text(dataset_card(run_dir.name, config, train, teachers))
    return out


def dataset_card(run_name: str, config: Config, train: list[Question], teachers: list[TeacherResult]) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData


    data = DatasetCardData(
        pretty_name=f"{run_name}: teacher rationales (tinyllm_ray)", task_categories=["question-answering"],
        tags=["rationales", "chain-of-thought", "distillation", "tinyllm"],
        size_categories=[_size_category(len(train))],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": TRAIN_FILE}]}],
    )
    by_name = {t.name: t for t in config.teachers}
    shots = config.teachers[0].shots if config.teachers else 2
    example = prompts.teacher_prompt(train[0], train[1:1 + shots]).replace("```", "'''")
    rows = []
    for t in teachers:
        settings = by_name.get(t.name)
        shown = (", ".join(f"{f}={getattr(settings, f)}" for f in GENERATION_FIELDS if f != "model")
                 if settings else "precomputed (imported from the dataset's files)")
        rows.append(f"| {t.name} | `{t.model}` | {t.rationales} | {t.rejected} | {shown} |")
    opened = bool(train) and train[0].is_open
    saw, other = ("the question **and the gold answer**", "another answer") if opened else \
        ("the question, its options **and the gold answer**", "another option")
    body = f"""# {run_name}: teacher rationales

Rationales written by {len(teachers)} teacher LLM(s) for the {len(train)} training questions of `{config.data.dataset}`,
by tinyllm_ray (the TinyLLM method): each teacher saw {saw}, with
in-context examples, and was asked to explain why that answer is right. Column `rationale_<teacher>` holds the
accepted rationale, or null where it was rejected (empty, too short, arguing for {other}, prompt too long).

## Teachers

| teacher | model | accepted | rejected | generation settings |
|---|---|---|---|---|
{chr(10).join(rows)}

## Prompt

Template `{prompts.TEACHER_TEMPLATE_VERSION}`. One prompt of this shape (each question gets its own examples,
drawn by the teacher's `shots_mode`):

```text
{example}
```

## Columns

`id`, `question`, `context`, `choices` (list; empty for open-answer questions), `answer` (the right choice's
text, or the open answer), `answer_index` (null for open-answer questions), and one `rationale_<teacher>` per
teacher.

```python
from datasets import load_dataset
rationales = load_dataset("PATH/TO/THIS/DIR")["train"]
```
"""
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"

