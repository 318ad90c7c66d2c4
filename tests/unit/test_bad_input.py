"""Issue #8's bad input end to end, where the per-module tests stop short of the entry point.

- A broken data file (truncated JSON, invalid UTF-8, a rationale file shorter than its question file)
  through ``tinyllm distill``: exit status 2 and one ``error:`` line naming the file, no traceback, and
  Ray is never reached (``pipeline.connect_ray`` is replaced by a tripwire).
- Every kind of bad row in one file through ``prepare.prepare``: each is counted and written to
  ``rejects.jsonl`` with its position and reason, the good rows are kept: nothing is lost silently.
- A model whose config asks for its own Python code is refused unless the config opts in
  (``trust_remote_code``), for the teacher engine and the student loader alike, and that code never runs.

The readers' own cases (each malformed row, each broken file) are in test_official.py, test_hub.py,
test_split_files.py, test_mapped.py, test_load.py and test_schema.py; config errors in test_config.py,
test_cli.py and test_run_dir.py.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tinyllm_ray import cli, pipeline, prepare
from tinyllm_ray.config import TeacherConfig, from_dict

GOOD = [{"id": f"g{i}", "question": f"What is {i} + 1?", "choices": [str(i), str(i + 1)], "answer": str(i + 1)}
        for i in range(6)]


@pytest.fixture
def no_ray(monkeypatch):
    def tripwire(config):
        raise AssertionError("Ray was reached with bad input")

    monkeypatch.setattr(pipeline, "connect_ray", tripwire)


def distill(capsys, models: Path, out: Path, *overrides: str) -> tuple[int, str, float]:
    args = ["distill", "--output-dir", str(out), "--set", "tiny_models=null", "--set", "teachers=[]",
            "--set", "train.alpha={}", "--set", "tune=null", "--set", "compare=false", "--set", f"student.model={models}/student-t5"]
    for o in overrides:
        args += ["--set", o]
    start = time.perf_counter()
    code = cli.main(args)
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.err, seconds


def jsonl_overrides(path: Path) -> list[str]:
    return ["data.dataset=mine", "data.format=jsonl", f"data.path={path}",
            "data.columns={question: question, choices: choices, answer: answer, id: id}"]


def test_truncated_json_file(capsys, no_ray, tiny_models, tmp_path):
    f = tmp_path / "questions.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in GOOD)[:-20])  # the last line is cut
    code, err, seconds = distill(capsys, tiny_models, tmp_path / "runs", *jsonl_overrides(f))
    assert code == 2 and err.startswith(f"error: {f}: line 6 is not valid JSON"), err
    assert len(err.strip().splitlines()) == 1
    print(f"truncated JSON refused in {seconds:.2f} s")


def test_invalid_utf8_file(capsys, no_ray, tiny_models, tmp_path):
    f = tmp_path / "questions.jsonl"
    f.write_bytes("\n".join(json.dumps(r) for r in GOOD).encode().replace(b"What is 3", b"Wh\xe9t is 3"))
    code, err, _ = distill(capsys, tiny_models, tmp_path / "runs", *jsonl_overrides(f))
    assert code == 2 and err.startswith(f"error: {f}: not valid UTF-8 at byte"), err


def test_rationale_file_shorter_than_its_question_file(capsys, no_ray, tiny_models, tmp_path):
    data = tmp_path / "toy"
    (data / "llm").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (data / f"toy_{split}.json").write_text("\n".join(json.dumps({**r, "id": f"{split}-{r['id']}"})
                                                          for r in GOOD))
    texts = [f"{i} plus one is {i + 1}. Thus, the answer is (b) {i + 1}" for i in range(len(GOOD) - 2)]
    (data / "llm" / "train_CoT_0.json").write_text(json.dumps(texts))
    code, err, _ = distill(capsys, tiny_models, tmp_path / "runs", "data.dataset=toy", "data.format=official",
                           f"data.path={data}", "data.rationales=precomputed")
    assert code == 2 and err.startswith("error: ") and str(data / "llm") in err, err
    assert "4 rationales" in err and "6 questions" in err


def test_every_bad_row_is_counted_with_its_reason(tiny_models, tmp_path):
    colours = ["red", "blue"]
    bad = [
        {"id": "no-answer", "question": "Which?", "choices": colours},
        {"id": "g1", "question": "Duplicate id?", "choices": colours, "answer": "red"},
        {"id": "not-a-choice", "question": "Which?", "choices": colours, "answer": "green"},
        {"id": "no-choices", "question": "Which?", "choices": [], "answer": "red"},
        {"id": "empty-choice", "question": "Which?", "choices": ["red", ""], "answer": "red"},
        {"id": "surrogate", "question": "Bad \ud800 text?", "choices": colours, "answer": "red"},
    ]
    f = tmp_path / "questions.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in GOOD + bad))
    raw = {"data": {"dataset": "mine", "format": "jsonl", "path": str(f), "valid_fraction": 0.2,
                    "columns": {"question": "question", "choices": "choices", "answer": "answer", "id": "id"}},
           "student": {"model": str(tiny_models / "student-t5")},
           "output": {"dir": str(tmp_path / "runs"), "run_name": "rejects"}}
    prepared = prepare.prepare(from_dict(raw))
    rejects = [json.loads(line) for line in (prepared.run_dir / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == len(bad)
    kept = sum(len(rows) for rows in prepared.splits.values())
    assert kept + len(rejects) == len(GOOD) + len(bad)  # every row is kept or listed
    reasons = {r["where"]: r["reason"] for r in rejects}
    first_bad = len(GOOD) + 1
    expected = ["missing 'answer'", "duplicate id", "'green' is neither a choice", "'red' is neither a choice",
                "an empty choice", "not valid Unicode"]
    for line, what in enumerate(expected, start=first_bad):
        assert what in reasons[f"questions.jsonl:line {line}"], (line, what, rejects)
    assert all(r.get("reason") for r in rejects)


def remote_code_model(src: Path, dst: Path, marker: Path) -> Path:
    """A copy of a tiny model whose config names a model type only its own Python file defines."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(model_type="tinyllm-custom", auto_map={"AutoConfig": "custom.CustomConfig",
                                                         "AutoModelForCausalLM": "custom.CustomModel",
                                                         "AutoModelForSeq2SeqLM": "custom.CustomModel"})
    (dst / "config.json").write_text(json.dumps(config))
    (dst / "custom.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    return dst


def test_remote_code_never_runs_unless_the_config_opts_in(tiny_models, tmp_path):
    from tinyllm_ray.student.model import load_student
    from tinyllm_ray.teachers.engines import make_engine

    marker = tmp_path / "remote-code-ran"
    teacher = remote_code_model(tiny_models / "teacher-a", tmp_path / "teacher", marker)
    student = remote_code_model(tiny_models / "student-t5", tmp_path / "student", marker)
    assert TeacherConfig(name="t", model=str(teacher)).trust_remote_code is False
    with pytest.raises(ValueError, match="trust_remote_code"):
        make_engine(TeacherConfig(name="t", model=str(teacher)))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_student(str(student))
    assert not marker.exists()
