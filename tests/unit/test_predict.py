"""``tinyllm predict`` on a student's model directory, and its refusals of bad input (one ``error:`` line, exit 2).
The run-directory form and ``tinyllm eval`` are checked against a finished run in
``tests/integration/test_pipeline.py``."""

from __future__ import annotations

import json

import pytest

from tinyllm_ray import cli


def test_predict_prints_one_option_per_question(tiny_models, tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "x1", "question": "What is 2 + 3?", "choices": ["4", "5", "6"]}) + "\n\n"
                         + json.dumps({"question": "Which day follows Monday?", "choices": ["Tuesday", "Sunday"],
                                       "context": "A week has seven days."}) + "\n")
    assert cli.main(["predict", str(tiny_models / "student-t5"), "--file", str(questions)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == ["x1", "3"]  # its id, else its line number
    assert lines[0]["choice"] in ("4", "5", "6") and lines[0]["choice"] == ["4", "5", "6"][lines[0]["index"]]
    assert lines[1]["choice"] == ["Tuesday", "Sunday"][lines[1]["index"]]
    assert all(isinstance(line["generated"], str) for line in lines)


@pytest.mark.parametrize(("args", "says"), [
    (["--question", "Q?", "--choices", "a"], "choices must be a list of at least 2"),
    (["--question", "Q?", "--choices", "a", "a"], "choices repeat an option"),
    ([], "give either --question (with --choices for a multiple-choice question), or --file"),
    (["--question", "Q?", "--choices", "a", "b", "--explain", "teacher-a"], "learned the rationales of no teacher"),
    (["--file", "{tmp}/missing.jsonl"], "missing.jsonl does not exist"),
    (["--file", "{tmp}/bad.jsonl"], "bad.jsonl: line 2 is not valid JSON"),
    (["--file", "{tmp}/deep.jsonl"], "deep.jsonl: line 2:"),  # nested beyond Python's recursion limit
    (["--file", "{tmp}/list.jsonl"], "list.jsonl:0: expected an object"),
])
def test_predict_refuses_bad_input_in_one_line(tiny_models, tmp_path, capsys, args, says):
    (tmp_path / "bad.jsonl").write_text('{"question": "Q", "choices": ["a", "b"]}\n{"question": \n')
    (tmp_path / "list.jsonl").write_text('["Q", "a", "b"]\n')
    (tmp_path / "deep.jsonl").write_text('{"question": "Q", "choices": ["a", "b"]}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert cli.main(["predict", str(tiny_models / "student-t5"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1, err


def test_predict_refuses_a_directory_without_a_student(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path), "--question", "Q?", "--choices", "a", "b"]) == 2
    assert "neither a run directory with an exported student nor a model directory" in capsys.readouterr().err
