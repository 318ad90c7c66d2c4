"""The run report: ``report.json`` (machine-readable), ``report.md`` (tables), and the console summary.

``report.json`` holds ``dataset``, ``teachers`` (name, model, rationales, rejected, tokens_generated,
seconds, and the teacher's own ``valid_accuracy``/``test_accuracy`` with the answers it gave that named no
option, ``unparsed``), ``student`` (model, valid/test accuracy, steps, seconds), ``baselines`` (with
``compare: true``), ``comparison`` (teachers, baselines and student side by side, ``compare.rows``) and
``timings`` (generate_s, train_s, eval_s, total_s); ``dataset`` names the splits published without answers
(``unlabelled``, left out) and whether test is half of valid (``test_from_valid``); ``render_markdown`` shows
the same facts as tables.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyllm_ray import answers, compare, model_files, prompts, replies
from tinyllm_ray.data.schema import SPLITS
from tinyllm_ray.publish import with_hub_metadata
from tinyllm_ray.results import StudentResult, TeacherResult

if TYPE_CHECKING:
    from tinyllm_ray.config import Config
    from tinyllm_ray.data.load import LoadedData


def build_report(config: Config, run_dir: Path, data: LoadedData, teachers: list[TeacherResult],
                 student: StudentResult, accuracy: dict[str, float], architecture: str,
                 timings: dict[str, float], baselines: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The report of a finished run from what its stages returned (``baselines``: with ``compare: true``)."""
    report = {
        "run_name": run_dir.name,
        "run_dir": str(run_dir),
        "dataset": {
            "name": config.data.dataset,
            **{s: len(data.splits.get(s, [])) for s in SPLITS},
            "rows_read": data.rows_read,
            "rejected": data.reject_counts(),
            "valid_from_train": data.valid_from_train,
            "unlabelled": data.unlabelled,
            "hub_commits": [f for f in data.files if f.startswith("hf://")],  # loaded by hub name: what was served
            "test_from_valid": data.test_from_valid,
            "task": data.task,
            "scorer": data.scorer,
            "scorer_means": answers.SCORERS[data.scorer],
            **({"rationale_filter": replies.OPEN_FILTER} if data.task == "open" else {}),
        },
        "teachers": [dataclasses.asdict(t) for t in teachers],
        "student": {
            "model": config.student.model,
            **({"model_source": source} if (source := model_files.source_of(config.student.model)) else {}),
            "loss_weights": config.task_weights(),
            "valid_accuracy": accuracy["valid"],
            "test_accuracy": accuracy.get("test"),
            "valid_accuracy_rank": accuracy.get("rank_valid"),
            "test_accuracy_rank": accuracy.get("rank_test"),
            "steps": student.steps,
            "seconds": student.seconds,
            "architecture": architecture,
            "mode": config.train.mode,
            "exported_step": student.best_step,
            "selected_on": f"valid accuracy ({config.eval.select_on}) during training",
            "samples_per_second": student.final_metrics.get("train_samples_per_second"),
            "truncated": student.truncated,
            "answer_prefix": config.student.answer_prefix,
            "rationale_prefix": config.student.rationale_prefix,
            **({"rank_skipped": RANK_SKIPPED} if data.task == "open" else {}),
        },
        "timings": timings,
    }
    if config.tune is not None:  # the exported student is the sweep's best trial
        report["student"].update(loss_weights=student.loss_weights, lr=student.lr)
        report["tune"] = student.tune
    if baselines is not None:
        report["baselines"] = {name: {k: b.get(k) for k in BASELINE_FIELDS} for name, b in baselines.items()}
    report["comparison"] = compare.rows(report)
    return report


# Why an open-answer run has no rank-classification accuracy.
RANK_SKIPPED = "open-answer task: rank classification needs options to rank, so only generated answers are scored"


BASELINE_FIELDS = ("loss_weights", "valid_accuracy", "test_accuracy", "valid_accuracy_rank", "test_accuracy_rank",
                   "steps", "best_step", "seconds")


def _comparison(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The side-by-side rows (a report written before they existed gets them from its other sections)."""
    return report.get("comparison") or compare.rows(report)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return _fmt(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def dataset_lines(d: dict[str, Any]) -> list[str]:
    """The report's lines about the data: split sizes and where valid and test came from, the splits published
    without answers (left out), and the rejected rows."""
    lines: list[str] = []
    held = " (held out of train)" if d.get("valid_from_train") else ""
    halved = " (half of the labelled valid split)" if d.get("test_from_valid") else ""
    scored = f" open-answer questions; answers scored by {d.get('scorer_means')}." if d.get("task") == "open" else \
        " questions."
    lines.append(f"Dataset **{d['name']}**: {d['train']} train, {d['valid']} valid{held}, {d['test']} test{halved}"
                 + scored)
    if d.get("unlabelled"):
        lines.append("Published without answers, so left out of training and scoring: "
                     + ", ".join(f"the {s} split ({n} rows)" for s, n in d["unlabelled"].items()) + ".")
    rejected = {s: sum(r.values()) for s, r in d.get("rejected", {}).items() if r}
    if rejected:
        lines.append("Rejected rows: " + ", ".join(f"{s} {n} ({d['rejected'][s]})" for s, n in rejected.items())
                     + "; see `rejects.jsonl`.")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    d, s, t = report["dataset"], report["student"], report["timings"]
    lines = [f"# TinyLLM distillation report: {report['run_name']}", ""]
    lines += dataset_lines(d)
    lines.append("")
    lines += ["## Teachers", ""]
    if report["teachers"]:
        lines += _table(
            ["teacher", "model", "rationales", "rejected", "acceptance", "rejected by reason", "tokens generated",
             "seconds", "own valid accuracy", "own test accuracy", "unparsed answers"],
            [[x["name"], x["model"], x["rationales"], x["rejected"], _fmt(x.get("acceptance_rate")),
              ", ".join(f"{k} {v}" for k, v in sorted(x.get("rejected_by_reason", {}).items())) or "-",
              x["tokens_generated"], x["seconds"], x.get("valid_accuracy"), x.get("test_accuracy"),
              ", ".join(f"{k} {v}" for k, v in (x.get("unparsed") or {}).items()) or "-"]
             for x in report["teachers"]],
        )
        if d.get("task") == "open":
            lines += ["", "A teacher's own accuracy: it answers the valid and test questions by itself (few-shot "
                      f"chain of thought without the gold answer) and its conclusion is scored by "
                      f"{d.get('scorer_means')}, like the student's answers; an answer without a conclusion "
                      "(*unparsed*) counts as wrong.", "", f"Rationale filter: {d.get('rationale_filter')}."]
        else:
            lines += ["", "A teacher's own accuracy: it answers the valid and test questions by itself (few-shot "
                      "chain of thought without the gold answer) and its conclusion is matched to an option like "
                      "the student's; an answer that names no option (*unparsed*) counts as wrong."]
        notes = {x["not_evaluated_because"] for x in report["teachers"] if x.get("not_evaluated_because")}
        lines += [f"Not evaluated: {n}." for n in sorted(notes)]
    else:
        lines.append("No teachers: label-only baseline.")
    lines += ["", "## Teachers, baselines and student", ""]
    lines += _table(["", "valid accuracy", "test accuracy", "valid (rank)", "test (rank)", "steps", "seconds"],
                    [[r["row"], r["valid_accuracy"], r["test_accuracy"], r["valid_accuracy_rank"],
                      r["test_accuracy_rank"], r["steps"], r["seconds"]] for r in _comparison(report)])
    if not report.get("baselines"):
        lines += ["", "Set `compare: true` to also train the label-only and single-teacher baselines with the same "
                  "budget."]
    lines += ["", "## Student", ""]
    lines += _table(
        ["model", "mode", "loss weights", "valid accuracy", "test accuracy", "valid (rank)", "test (rank)", "steps",
         "exported step", "seconds"],
        [[model_files.describe(s["model"]), s.get("mode"), ", ".join(f"{k}={v:g}" for k, v in s["loss_weights"].items()),
          s["valid_accuracy"], s["test_accuracy"], s["valid_accuracy_rank"], s["test_accuracy_rank"], s["steps"],
          s.get("exported_step"), s["seconds"]]],
    )
    if s.get("rank_skipped"):
        lines += ["", f"Accuracy: the student generates its answer, scored by {d.get('scorer_means')}; *rank*: "
                  f"n/a ({s['rank_skipped']}). The exported student is the checkpoint with the best valid "
                  "accuracy during training."]
    else:
        lines += ["", "Accuracy: the student generates its answer and it is matched to an option (the paper's "
                  "scorer); *rank*: the option the student finds most likely. The exported student is the "
                  "checkpoint with the best valid accuracy during training."]
    if report.get("tune"):
        lines += ["", *tune_markdown(report["tune"])]
    lines += ["", "## Timings (seconds)", ""]
    lines += _table(list(t), [list(t.values())])
    return "\n".join(lines) + "\n"


def tune_markdown(tune: dict[str, Any]) -> list[str]:
    """The sweep section of ``report.md``: one row per trial, the exported one marked, and the plot."""
    best = tune["best"]
    keys = list(best["point"])
    lines = ["## Loss-weight sweep", "",
             f"{len(tune['trials'])} trials, {tune['search']} search, scheduler {tune['scheduler']}, at most "
             f"{tune['max_concurrent_trials']} at once; {tune['evaluations_total']} evaluations in all "
             f"(a trial that runs to the end makes {tune['evaluations_per_trial']}). The exported student is the "
             f"best checkpoint on valid: trial {best['trial_id']}, step {best['step']}, valid accuracy "
             f"{_fmt(best['valid_accuracy'])}.", ""]
    rows = [[("**" + x["trial_id"] + "**") if x["trial_id"] == best["trial_id"] else x["trial_id"],
             *[_fmt(x["point"].get(k)) if k != "lr" else f"{x['point'].get(k):.2e}" for k in keys],
             _fmt(x["valid_accuracy"]), x["evaluations"], x["steps"], x["status"]] for x in tune["trials"]]
    lines += _table(["trial", *keys, "valid accuracy", "evaluations", "steps", "status"], rows)
    if tune.get("plot"):
        lines += ["", f"![valid accuracy against the loss weights]({tune['plot']})"]
    return lines


def console_summary(report: dict[str, Any]) -> str:
    """Plain-text tables for the end of a run: the teachers' rationales, then teachers, baselines and
    student side by side (accuracy of the generated answer; rank classification in brackets)."""
    lines = []
    if report["teachers"]:
        lines += _columns([("teacher", "rationales", "rejected", "acceptance", "tokens", "seconds")]
                          + [(x["name"], x["rationales"], x["rejected"], _fmt(x.get("acceptance_rate")),
                              x["tokens_generated"], f"{x['seconds']:.1f}") for x in report["teachers"]])
        lines.append("")

    def acc(row: dict[str, Any], split: str) -> str:
        rank = row.get(f"{split}_accuracy_rank")
        return _fmt(row.get(f"{split}_accuracy")) + (f" ({_fmt(rank)})" if rank is not None else "")

    lines += _columns([("", "valid accuracy", "test accuracy", "steps", "seconds")]
                      + [(r["row"], acc(r, "valid"), acc(r, "test"), _fmt(r["steps"]),
                          "n/a" if r["seconds"] is None else f"{r['seconds']:.1f}") for r in _comparison(report)])
    if report.get("tune"):
        tune = report["tune"]
        weights = ", ".join(f"{k}={v:g}" for k, v in tune["best"]["point"].items())
        lines.append(f"sweep: {len(tune['trials'])} trials, {tune['evaluations_total']} evaluations; "
                     f"best on valid: trial {tune['best']['trial_id']} ({weights})")
    if report["dataset"].get("task") == "open":
        lines.append(f"open answers scored by {report['dataset'].get('scorer_means')}; no rank classification")
    lines.append(f"student {model_files.describe(report['student']['model'])}; total {report['timings']['total_s']:.1f}s; "
                 f"report: {report['run_dir']}/report.md")
    return "\n".join(lines)


def _columns(rows: list[tuple[Any, ...]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def model_card_text(report: dict[str, Any]) -> str:
    """``README.md`` for the exported student: what it is, how it was made, how well it does, how to load it."""
    s, d = report["student"], report["dataset"]
    teachers = ", ".join(f"{t['name']} ({t['model']})" for t in report["teachers"]) or "none (label-only baseline)"
    weights = ", ".join(f"{k}={v:g}" for k, v in s["loss_weights"].items())
    causal = s.get("architecture") == "causal"
    one_encoder = s.get("mode") == "one_encoder"
    auto = "AutoModelForCausalLM" if causal else "AutoModelForSeq2SeqLM"
    if one_encoder:
        how = ("Trained in one-encoder mode: the encoder reads the question alone and the decoder starts with "
               "the task marker `predict:`, so pass it as `decoder_input_ids`.")
        code = """prompt = "Q: <question>\\nOptions: (a) <option> (b) <option>"
start = [model.config.decoder_start_token_id] + tokenizer("predict:", add_special_tokens=False)["input_ids"]
out = model.generate(**tokenizer(prompt, return_tensors="pt"), decoder_input_ids=torch.tensor([start]))
print(tokenizer.decode(out[0, len(start):], skip_special_tokens=True))"""
    elif causal:
        how = "A causal LM: the answer follows the prompt and a newline; decode only the new tokens."
        code = """prompt = "predict: Q: <question>\\nOptions: (a) <option> (b) <option>\\n"
inputs = tokenizer(prompt, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=16)
print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))"""
    else:
        how = "The task prefix `predict:` leads the input."
        code = """prompt = "predict: Q: <question>\\nOptions: (a) <option> (b) <option>"
print(tokenizer.decode(model.generate(**tokenizer(prompt, return_tensors="pt"))[0], skip_special_tokens=True))"""
    scored = "generate and match"
    if d.get("task") == "open":  # no options line, nothing to rank
        code = code.replace("\\nOptions: (a) <option> (b) <option>", "")
        scored = f"generated, {d.get('scorer')} match"
    prefix = s.get("answer_prefix", prompts.ANSWER_PREFIX)
    if prefix != prompts.ANSWER_PREFIX:  # the student's own task prefix (student.answer_prefix)
        how = how.replace("`predict:`", f"`{prefix.strip()}`")  # the prompt's lead, then the one-encoder marker
        code = code.replace('"predict: ', json.dumps(prefix)[:-1]).replace('"predict:"', json.dumps(prefix.strip()))
    explain = s.get("rationale_prefix", prompts.RATIONALE_PREFIX).format(teacher="<teacher>").strip()
    base = f"`{s['model']}`"
    if source := s.get("model_source"):  # converted from a GGUF file (model_files): name the file and package
        origin = (f"`{source['member']}` of the PyPI package `{source['package']}`" if source.get("package")
                  else f"`{source.get('file')}`")
        base = (f"{source.get('about') or source.get('name') or source.get('gguf_file')}: {origin} (GGUF, sha256 "
                f"`{source.get('gguf_sha256', '?')[:16]}…`, converted to a Hugging Face folder by tinyllm_ray)")
    exported = f"; exported: the checkpoint of step {s['exported_step']}, best on valid" if s.get("exported_step") else ""
    return f"""# {report['run_name']}: a TinyLLM student

Distilled with tinyllm_ray from several teachers' rationales (the TinyLLM method).

- Base model: {base}
- Teachers: {teachers}
- Loss weights: {weights} (answer task `{prefix.strip()}`, one `{explain}` task per teacher)
- Data: {d['name']}, {d['train']} training questions; {s['steps']} optimizer steps{exported}

| split | accuracy ({scored}) | accuracy (rank classification) |
|---|---|---|
| valid | {_fmt(s['valid_accuracy'])} | {_fmt(s['valid_accuracy_rank'])} |
| test | {_fmt(s['test_accuracy'])} | {_fmt(s['test_accuracy_rank'])} |

{how}

```python
import torch
from transformers import {auto}, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/DIR")
model = {auto}.from_pretrained("PATH/TO/THIS/DIR")
{code}
```
"""


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (run_dir / "report.md").write_text(render_markdown(report))
    (run_dir / "student" / "README.md").write_text(with_hub_metadata(report, model_card_text(report)))
