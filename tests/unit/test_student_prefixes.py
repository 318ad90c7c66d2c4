"""The student's task prefixes from the config (``student.answer_prefix`` / ``student.rationale_prefix``):
they reach the training inputs, the one-encoder decoder marker and the scorer's inputs; bad ones are refused
naming the key; the defaults keep the student's stage key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tinyllm_ray import markers, prompts
from tinyllm_ray.config import ConfigError, from_dict
from tinyllm_ray.config.checks import validate
from tinyllm_ray.data.synthetic import generate
from tinyllm_ray.student.batches import Encoder, Tokenize, example_table, input_col

MINE = prompts.StudentText(answer_prefix="answer: ", rationale_prefix="why_{teacher}: ")


def test_training_inputs_carry_the_configured_prefixes() -> None:
    questions = generate(3, 1, 1, seed=2, task="open")["train"]
    table = example_table(questions, {"teacher-a": {}}, MINE)
    block = prompts.question_block(questions[0])
    assert table.column(input_col("answer"))[0].as_py() == "answer: " + block
    assert table.column(input_col("teacher-a"))[0].as_py() == "why_teacher-a: " + block
    assert example_table(questions, {})[input_col("answer")][0].as_py() == "predict: " + block  # the default


def test_the_one_encoder_marker_and_the_tokenizer_udf_use_them(tiny_models: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models / "student-t5")
    mine, default = Encoder(tok, "one_encoder", 32, 16, 0, MINE), Encoder(tok, "one_encoder", 32, 16, 0)
    assert tok.decode(mine.marker("teacher-a")) == "why_teacher-a:"
    assert tok.decode(default.marker("answer")) == "predict:"
    udf = Tokenize(str(tiny_models / "student-t5"), ["answer"], 32, 16, layout="one_encoder", text=MINE)
    assert np.array_equal(udf.encoder.marker("answer"), mine.marker("answer"))


@pytest.mark.parametrize(("student", "says"), [
    ({"answer_prefix": " "}, "student.answer_prefix: empty"),
    ({"rationale_prefix": "explain: "}, "student.rationale_prefix: must name the teacher as {teacher}"),
    ({"rationale_prefix": "explain_{name}: "}, "student.rationale_prefix: must name the teacher as {teacher}"),
    ({"answer_prefix": "explain_t: "}, "student.answer_prefix: 'explain_t: ' is also a teacher's rationale prefix"),
])
def test_bad_prefixes_are_refused_naming_the_key(student, says) -> None:
    config = from_dict({"student": {"model": "s", **student}, "teachers": [{"name": "t", "model": "m"}]})
    with pytest.raises(ConfigError, match=says.replace("{", r"\{").replace("}", r"\}")):
        validate(config, check_paths=False)


def test_default_prefixes_keep_the_student_key_and_changed_ones_change_it() -> None:
    student = from_dict({"student": {"model": "s"}}).student
    old_style = {f.name: getattr(student, f.name) for f in dataclasses.fields(student)
                 if f.name not in ("answer_prefix", "rationale_prefix")}
    assert markers.stage_key(student) == markers.stage_key(old_style)
    assert markers.stage_key(dataclasses.replace(student, answer_prefix="answer: ")) != markers.stage_key(student)
