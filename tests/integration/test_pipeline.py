"""End to end on a shared local Ray: teachers -> rationales -> Ray Train student -> evaluation -> report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from transformers import AutoModelForCausalLM

from tests.helpers import REPO, SHARED_DATA, tiny_run_config
from tinyllm_ray import answers, pipeline
from tinyllm_ray.config import from_dict
from tinyllm_ray.data.load import load_data

pytestmark = pytest.mark.ray


SENTINEL = "hf_SENTINEL0123456789abcdefTOKEN"


@pytest.fixture(scope="module")
def first_run_console(ray_local, tiny_models, tmp_path_factory):
    """The run as a user starts it: ``python jobs/distill.py --config FILE`` in its own process, with its own
    local Ray and the default (quiet) console; (config, report, run dir, console output)."""
    out = tmp_path_factory.mktemp("runs")
    raw = tiny_run_config(tiny_models, out, "e2e", compare=True, ray={"num_cpus": 2})
    config_file = out / "e2e.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own Ray, not the session's
    env["HF_TOKEN"] = SENTINEL  # a hub token in the environment must never reach the run dir
    env["TINYLLM_PROGRESS_EVERY_S"] = "3"  # plain progress lines (no terminal here) often enough to see them
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "distill.py"), "--config", str(config_file)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    run_dir = out / "e2e"
    return from_dict(raw), json.loads((run_dir / "report.json").read_text()), run_dir, done.stderr, done.stdout


@pytest.fixture(scope="module")
def first_run(first_run_console):
    return first_run_console[:3]


def test_the_default_console_is_short_with_stage_lines_and_the_full_logs_are_kept(first_run_console):
    _, report, run_dir, logged, printed = first_run_console
    console = logged + printed  # the log lines (stderr), then the result table (stdout)
    lines = [line for line in console.splitlines() if " progress " not in line]
    assert len(lines) <= 60, console  # (the progress lines are one per task every 3 s here, 30 s by default)
    progress = [line for line in console.splitlines() if " progress " in line]
    assert any(" progress teacher teacher-a: " in line and " rows (" in line for line in progress), console
    steps = report["student"]["steps"]
    assert any(f" progress student: {steps}/{steps} steps (100%)" in line for line in progress), console
    for stage_line in ("tinyllm_ray.console: run ", "tinyllm_ray.console: teachers: teacher-a",
                       "tinyllm_ray.console: teacher teacher-b: ", "tinyllm_ray.console: student: ",
                       "tinyllm_ray.console: evaluation: "):
        assert stage_line in console, stage_line
    assert "(pid=" not in console and "Execution plan" not in console  # no worker output, no Ray Data plans
    assert printed.splitlines()[-1].startswith("student ") and "valid accuracy" in printed  # the result table
    log = (run_dir / "logs" / "driver.log").read_text()
    assert "Ray cluster resources" in log and "teachers: teacher-a" in log  # every driver line, in full
    assert (run_dir / "logs" / "ray").is_symlink() and (run_dir / "logs" / "ray").is_dir()  # workers' output


def test_report_has_every_stage(first_run):
    _, report, run_dir = first_run
    on_disk = json.loads((run_dir / "report.json").read_text())
    assert on_disk == report
    assert {k: report["dataset"][k] for k in ("name", "train", "valid", "test")} == {
        "name": "synthetic", "train": 48, "valid": 16, "test": 16}
    assert report["dataset"]["rejected"] == {"train": {}, "valid": {}, "test": {}}
    assert report["dataset"]["valid_from_train"] is False
    assert [t["name"] for t in report["teachers"]] == ["teacher-a", "teacher-b"]
    for t in report["teachers"]:
        assert t["rationales"] + t["rejected"] == 48
        assert t["tokens_generated"] > 0 and t["seconds"] > 0
        assert set(t) >= {"name", "model", "rationales", "rejected", "tokens_generated", "seconds"}
        assert t["evaluated"] is True  # each teacher answered valid and test by itself
        assert 0.0 <= t["valid_accuracy"] <= 1.0 and 0.0 <= t["test_accuracy"] <= 1.0
        assert set(t["unparsed"]) == {"valid", "test"} and all(0 <= n <= 16 for n in t["unparsed"].values())
    assert list(report["baselines"]) == ["label-only", "only-teacher-a", "only-teacher-b"]
    for name, b in report["baselines"].items():
        assert b["steps"] == 3 and 0.0 <= b["test_accuracy"] <= 1.0 and 0.0 <= b["test_accuracy_rank"] <= 1.0
        assert (run_dir / "compare" / name / "student" / "config.json").is_file()
    assert report["baselines"]["label-only"]["loss_weights"] == {"answer": 1.0, "teacher-a": 0.0, "teacher-b": 0.0}
    assert report["baselines"]["only-teacher-b"]["loss_weights"] == {"answer": 1.0, "teacher-a": 0.0,
                                                                     "teacher-b": 0.5}
    # The baselines trained in the student's own Ray Train run, on its batches: its checkpoints hold them.
    latest = sorted((run_dir / "train" / "student").glob("checkpoint_step*"))[-1]
    assert sorted(p.name for p in (latest / "arms").iterdir()) == list(report["baselines"])
    assert not (run_dir / "compare" / "train").exists()  # no run of their own
    assert {b["seconds"] for b in report["baselines"].values()} == {report["student"]["seconds"]}
    assert [r["kind"] for r in report["comparison"]] == ["teacher"] * 2 + ["baseline"] * 3 + ["student"]
    assert report["comparison"][-1]["test_accuracy"] == report["student"]["test_accuracy"]
    s = report["student"]
    assert s["steps"] == 3  # 48 questions / batch 16, one epoch
    for key in ("valid_accuracy", "test_accuracy", "valid_accuracy_rank", "test_accuracy_rank"):
        assert 0.0 <= s[key] <= 1.0
    assert s["loss_weights"] == {"answer": 1.0, "teacher-a": 0.5, "teacher-b": 0.5}
    t = report["timings"]
    assert t["total_s"] >= t["generate_s"] + t["train_s"] + t["eval_s"] > 0


def test_run_dir_holds_rationales_student_and_predictions(first_run):
    _, report, run_dir = first_run
    assert (run_dir / "config.yaml").is_file()
    for teacher in ("teacher-a", "teacher-b"):
        table = pq.read_table(run_dir / "rationales" / teacher)
        assert sorted(set(table.column("teacher").to_pylist())) == [teacher]
        roles = table.column("role").to_pylist()
        assert {r: roles.count(r) for r in set(roles)} == {"train": 48, "valid": 16, "test": 16}
        assert len({(i, r) for i, r in zip(table.column("id").to_pylist(), roles)}) == 80
    assert (run_dir / "student" / "config.json").is_file()
    assert (run_dir / "student" / "tokenizer.json").is_file()
    assert not (run_dir / "student" / "train_state.pt").exists()  # no optimizer state in the export
    assert not (run_dir / "student" / "arms").exists()  # nor the baselines trained beside it
    card = (run_dir / "student" / "README.md").read_text()
    assert "teacher-a" in card and "AutoModelForSeq2SeqLM.from_pretrained" in card
    predictions = pq.read_table(run_dir / "predictions.parquet")
    assert predictions.num_rows == 32
    correct = predictions.filter(predictions.column("split").to_numpy(zero_copy_only=False) == "valid")
    assert sum(correct.column("correct").to_pylist()) / 16 == pytest.approx(report["student"]["valid_accuracy"])
    assert sum(correct.column("rank_correct").to_pylist()) / 16 == pytest.approx(
        report["student"]["valid_accuracy_rank"])
    assert all(0 <= p < 5 for p in predictions.column("rank_predicted").to_pylist())  # always names an option
    md = (run_dir / "report.md").read_text()
    assert "| teacher-a |" in md and "valid accuracy" in md
    from tinyllm_ray import prompts, replies

    shown = (run_dir / "prompts" / "teacher-a.txt").read_text()  # what the teacher read for question 1
    assert shown.startswith(prompts.TEACHER_INSTRUCTION) and shown.rstrip().endswith(replies.RATIONALE_LEAD)
    from huggingface_hub import ModelCard

    results = ModelCard.load(run_dir / "student" / "README.md").data.eval_results
    assert {(r.dataset_split, r.metric_name): r.metric_value for r in results}[
        ("test", "accuracy (generate and match)")] == round(report["student"]["test_accuracy"], 4)
    shared = pq.read_table(run_dir / "dataset" / "data").to_pydict()  # the rationales as a HF dataset
    assert len(shared["id"]) == 48
    for t in report["teachers"]:
        assert sum(r is not None for r in shared[f"rationale_{t['name']}"]) == t["rationales"]


def test_training_wrote_tensorboard_files_for_the_student_and_each_baseline(first_run):
    from tinyllm_ray import tracking

    _, report, run_dir = first_run
    student = tracking.read_scalars(run_dir / "tensorboard" / "student")
    assert {tracking.LOSS, tracking.LR, tracking.VALID_ACCURACY, tracking.task_loss("teacher-a")} <= set(student)
    assert len(student[tracking.LOSS]) == report["student"]["steps"]  # log_every: 1
    for name in report["baselines"]:
        assert tracking.VALID_ACCURACY in tracking.read_scalars(run_dir / "tensorboard" / name)


def test_no_secret_in_anything_the_run_wrote(first_run):
    _, _, run_dir = first_run
    files = [f for f in run_dir.rglob("*") if f.is_file()]
    assert len(files) > 10
    assert not [f for f in files if SENTINEL.encode() in f.read_bytes()]


def test_same_config_again_reuses_finished_stages(first_run):
    config, report, _ = first_run
    again = pipeline.run(config)
    assert [t["seconds"] for t in again["teachers"]] == [t["seconds"] for t in report["teachers"]]
    assert again["student"]["seconds"] == report["student"]["seconds"]
    assert again["student"]["valid_accuracy"] == report["student"]["valid_accuracy"]
    assert again["timings"]["train_s"] < report["timings"]["train_s"]
    assert again["baselines"] == report["baselines"]  # reused, not retrained (same seconds and scores)


def test_the_plan_of_a_finished_run_reuses_every_stage_and_changes_nothing(first_run):
    from tinyllm_ray import dry_run

    config, _, run_dir = first_run
    before = {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")}
    planned = dry_run.make_plan(config)
    assert planned["resume"] is True
    assert [t["reused"] for t in planned["teachers"]] == [True, True]
    assert [sum(t["to_generate"].values()) for t in planned["teachers"]] == [0, 0]
    assert planned["student"]["reused"] is True and planned["student"]["trainings"] == 0
    assert planned["cluster"]["seen"] == "connected cluster"  # the session's Ray: its node, not a guess
    assert {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")} == before
    # One teacher's store lost: only that teacher is planned again, its new tokens from max_new_tokens.
    lost = run_dir / "rationales" / "teacher-b"
    moved = run_dir.parent / "teacher-b-moved"
    lost.rename(moved)
    try:
        planned = dry_run.make_plan(config)
    finally:
        moved.rename(lost)
    a, b = planned["teachers"]
    assert a["reused"] and not b["reused"]
    assert b["to_generate"] == {"train": 48, "valid": 16, "test": 16}
    assert planned["student"]["trainings"] == 0  # the student's export is still this config's


def test_predict_and_eval_give_the_runs_own_answers(first_run, tmp_path, capsys):
    from tinyllm_ray import cli
    from tinyllm_ray.data.load import load_data

    config, report, run_dir = first_run
    run_answers = {(r["split"], r["id"]): r for r in pq.read_table(run_dir / "predictions.parquet").to_pylist()}
    splits = load_data(config.data).splits
    # valid then test, as the run's evaluation batched them: the same batches give the same answers
    asked = [("valid", q) for q in splits["valid"]] + [("test", q) for q in splits["test"]]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": q.id, "question": q.question, "choices": list(q.choices),
                                             "context": q.context}) + "\n" for _, q in asked))
    assert cli.main(["predict", str(run_dir), "--file", str(questions), "--explain", "teacher-a"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == [q.id for _, q in asked]
    for (split, q), line in zip(asked, lines, strict=True):
        assert line["index"] == run_answers[(split, q.id)]["rank_predicted"]
        assert line["generated"] == run_answers[(split, q.id)]["generated"]
        assert isinstance(line["explain_teacher-a"], str)

    assert cli.main(["eval", str(run_dir / "student"), "--config", str(run_dir / "config.yaml")]) == 0
    scored = json.loads(capsys.readouterr().out.splitlines()[-1])
    for key in ("valid_accuracy", "test_accuracy", "valid_accuracy_rank", "test_accuracy_rank"):
        assert scored[key] == report["student"][key], key
    assert scored["questions"] == {"valid": 16, "test": 16}


@pytest.mark.slow  # ~45 s: a resumed Train run and the scoring; the rare path of a job stopped between exports
def test_a_lost_baseline_export_comes_back_from_the_students_run(first_run):
    # As after a job stopped between the student's export and a baseline's: the student's finished run
    # resumes at its last step, trains nothing, and hands over the baseline's selection again.
    config, report, run_dir = first_run
    shutil.rmtree(run_dir / "compare" / "only-teacher-b")
    again = pipeline.run(config)
    assert again["student"] == report["student"]  # reused
    lost, before = again["baselines"]["only-teacher-b"], report["baselines"]["only-teacher-b"]
    for key in ("best_step", "steps", "valid_accuracy", "test_accuracy", "valid_accuracy_rank", "loss_weights"):
        assert lost[key] == before[key], key
    assert lost["seconds"] < before["seconds"]  # resumed at the last step: nothing trained
    assert again["baselines"]["label-only"] == report["baselines"]["label-only"]


@pytest.mark.slow  # label-only training also runs by default, as the compare baseline of the first run
def test_label_only_baseline_without_teachers(ray_local, tiny_models, tmp_path):
    raw = tiny_run_config(tiny_models, tmp_path, "baseline", teachers=0)
    report = pipeline.run(from_dict(raw))
    assert report["teachers"] == []
    assert report["student"]["loss_weights"] == {"answer": 1.0}
    assert report["student"]["steps"] == 3


def test_failing_teacher_is_named_and_finished_teachers_are_kept(ray_local, tiny_models, tmp_path):
    broken = tmp_path / "broken-teacher"
    shutil.copytree(tiny_models / "teacher-b", broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    raw = tiny_run_config(tiny_models, tmp_path / "runs", "broken")
    raw["teachers"][1]["model"] = str(broken)
    with pytest.raises(pipeline.StageError, match="teacher 'teacher-b'") as info:
        pipeline.run(from_dict(raw))
    assert "SafetensorError" in str(info.value) and "Traceback" not in str(info.value)
    kept = pq.read_table(tmp_path / "runs" / "broken" / "rationales" / "teacher-a").column("role").to_pylist()
    assert (kept.count("train"), kept.count("valid"), kept.count("test")) == (48, 16, 16)




def _authors_layout(root: Path) -> Path:
    """A hand-written dataset in the TinyLLM authors' layout: 12 train / 4 valid / 4 test, one bad row."""
    root.mkdir(parents=True)
    (root / "llm").mkdir()
    for split, n in (("train", 12), ("valid", 4), ("test", 4)):
        rows = [{"id": f"{split}-{i}", "question": f"Is {i} even?", "choices": ["yes", "no"],
                 "answer": "yes" if i % 2 == 0 else "no"} for i in range(n)]
        if split == "train":
            rows[3]["answer"] = "maybe"  # rejected: not among the choices
        (root / f"toy_{split}.json").write_text("\n".join(json.dumps(r) for r in rows))
        texts = [f"{i} divided by 2 leaves {i % 2}. Thus, the answer is (a) yes\n\nQ: Is {i} even?\nAnswer Choices:\n"
                 f"(a) yes\n(b) no llama rationale: Let's think step by step. {i} mod 2 is {i % 2}." for i in range(n)]
        (root / "llm" / f"{split}_CoT_0.json").write_text(json.dumps(texts))
    return root


def _precomputed_config(models: Path, data_dir: Path, out: Path, **data) -> dict:
    raw = tiny_run_config(models, out, "precomputed", teachers=0)
    raw["data"] = {"dataset": data_dir.name, "path": str(data_dir), "rationales": "precomputed", **data}
    raw["train"]["alpha"] = {"flan-t5-xl": 0.5, "llama-2-chat": 0.5}
    return raw


@pytest.mark.slow  # ~58 s; the open-answer run above trains a causal student with accumulation by default
def test_precomputed_rationales_train_a_causal_student_without_any_teacher(ray_local, tiny_models, tmp_path):
    """The authors' layout with their rationales and no teacher, read by a causal student (a tiny Llama) that
    trains with gradient accumulation and length bucketing, selects on valid by generation and exports."""
    data_dir = _authors_layout(tmp_path / "toy")
    raw = _precomputed_config(tiny_models, data_dir, tmp_path / "runs")
    raw["student"] = {"model": str(tiny_models / "teacher-a"), "max_input_tokens": 96, "max_target_tokens": 16,
                      "max_answer_tokens": 4}
    raw["train"].update({"batch_size": 2, "grad_accum_steps": 2, "length_bucketing": 2, "cpus_per_worker": 1.0})
    raw["eval"] = {"every_steps": 1, "select_on": "generate", "max_valid": 8, "replicas": 1, "num_cpus": 0.5}
    report = pipeline.run(from_dict(raw))
    assert [(t["name"], t["rationales"], t["tokens_generated"]) for t in report["teachers"]] == [
        ("flan-t5-xl", 11, 0), ("llama-2-chat", 11, 0)]
    assert all(t["evaluated"] is False and t["valid_accuracy"] is None and "gold answer" in t["not_evaluated_because"]
               for t in report["teachers"])  # written with the answer in the prompt: no accuracy derived
    assert report["dataset"]["rejected"]["train"] == {"answer 'maybe' is not among the choices": 1}
    assert (report["dataset"]["train"], report["dataset"]["valid"], report["dataset"]["test"]) == (11, 4, 4)
    s = report["student"]
    assert s["architecture"] == "causal" and s["steps"] == 3  # 11 questions: 6 micro-batches of 2, 2 per step
    for key in ("valid_accuracy", "test_accuracy", "valid_accuracy_rank", "test_accuracy_rank"):
        assert 0.0 <= s[key] <= 1.0
    export = tmp_path / "runs" / "precomputed" / "student"
    assert AutoModelForCausalLM.from_pretrained(export).config.model_type == "llama"
    assert "AutoModelForCausalLM" in (export / "README.md").read_text()
    stored = pq.read_table(tmp_path / "runs" / "precomputed" / "rationales" / "llama-2-chat").to_pylist()
    by_id = {r["id"]: r["rationale"] for r in stored}
    assert by_id["train-5"] == "5 mod 2 is 1."  # aligned across the rejected row 3
    rejects = (tmp_path / "runs" / "precomputed" / "rejects.jsonl").read_text().splitlines()
    assert [json.loads(r)["where"] for r in rejects] == ["toy_train.json:line 4"]


def test_an_open_answer_run_of_the_built_in_dataset_goes_end_to_end(ray_local, tiny_models, tmp_path):
    """``data.task: open``: questions without options through teachers (rationales and their own answers),
    the student (changed task prefixes), both evaluations and the report, which names the scorer; every
    accuracy is recomputed here from what the run stored."""
    raw = tiny_run_config(tiny_models, tmp_path / "runs", "open", teachers=1,
                          data={"task": "open", "n_train": 24, "n_valid": 8, "n_test": 8},
                          student={"answer_prefix": "answer: ", "rationale_prefix": "why_{teacher}: "})
    raw["train"]["alpha"] = {"teacher-a": 1.0}
    raw["teachers"][0].update(shots=0, max_new_tokens=8)  # zero-shot: rationales and answers in one engine pass
    # A causal student (a tiny Llama) with gradient accumulation and length bucketing: the default suite's causal
    # end-to-end run (the precomputed one below is marked slow).
    raw["student"].update(model=str(tiny_models / "teacher-a"), max_answer_tokens=4)
    raw["train"].update(batch_size=4, grad_accum_steps=2, length_bucketing=2)
    report = pipeline.run(from_dict(raw))
    run_dir = tmp_path / "runs" / "open"
    d, s = report["dataset"], report["student"]
    assert s["architecture"] == "causal" and s["steps"] == 3  # 24 questions: 6 micro-batches of 4, 2 per step
    assert (d["task"], d["scorer"]) == ("open", "exact")  # numbers, names and days: not all numbers
    assert s["valid_accuracy_rank"] is None and s["test_accuracy_rank"] is None and "rank" in s["rank_skipped"]
    assert "answers scored by normalised exact match" in (run_dir / "report.md").read_text()
    assert "off for text answers" in d["rationale_filter"]
    shown = (run_dir / "prompts" / "teacher-a.txt").read_text()
    assert "Options:" not in shown and shown.startswith("The following are questions with their correct answers.")
    questions = {q.id: q for q in load_data(from_dict(raw).data).splits["test"]}
    stored = pq.read_table(run_dir / "rationales" / "teacher-a").to_pylist()
    own = [r for r in stored if r["role"] == "test"]
    assert len(own) == len(questions) == 8
    right = sum(not r["reject_reason"] and answers.correct(r["said"], questions[r["id"]].answer, "exact") for r in own)
    assert report["teachers"][0]["test_accuracy"] == right / len(own)
    predictions = [r for r in pq.read_table(run_dir / "predictions.parquet").to_pylist() if r["split"] == "test"]
    assert all(r["rank_predicted"] == -1 for r in predictions)
    assert [r["correct"] for r in predictions] == [answers.correct(r["generated"], questions[r["id"]].answer, "exact")
                                                   for r in predictions]
    assert s["test_accuracy"] == sum(r["correct"] for r in predictions) / len(predictions)
    card = (run_dir / "student" / "README.md").read_text()
    assert 'prompt = "answer: Q: <question>\\n"' in card and "type: question-answering" in card


@pytest.mark.slow  # ~80 s: reads the whole real dataset (only where ../shared is, never in CI)
@pytest.mark.skipif(not (SHARED_DATA / "obqa").is_dir(), reason="../shared/data is not on this machine")
def test_obqa_preset_with_the_authors_rationales(ray_local, tiny_models, tmp_path):
    raw = _precomputed_config(tiny_models, SHARED_DATA / "obqa", tmp_path / "runs", dataset="obqa", max_train=64)
    report = pipeline.run(from_dict(raw))
    assert report["dataset"]["rows_read"] == {"train": 4957, "valid": 500, "test": 500}
    assert [t["name"] for t in report["teachers"]] == ["flan-t5-xl", "llama-2-chat"]
    assert report["teachers"][0]["rationales"] == 4957
    assert report["student"]["steps"] == 4
    # the reported accuracy is the share of the 500 valid predictions that are right
    predictions = pq.read_table(Path(report["run_dir"]) / "predictions.parquet").to_pylist()
    valid = [r["correct"] for r in predictions if r["split"] == "valid"]
    assert len(valid) == 500 and report["student"]["valid_accuracy"] == pytest.approx(sum(valid) / 500)
