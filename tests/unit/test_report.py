"""The exported student's model card: its loading code runs as written on a model of each kind."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from tinyllm_ray.report import model_card


def _report(mode: str, architecture: str, model: str) -> dict:
    student = {"model": model, "mode": mode, "architecture": architecture, "loss_weights": {"answer": 1.0},
               "steps": 3, "valid_accuracy": 0.5, "valid_accuracy_rank": 0.5, "test_accuracy": 0.5,
               "test_accuracy_rank": 0.5}
    return {"run_name": "card", "student": student, "teachers": [],
            "dataset": {"name": "synthetic", "train": 48}}


@pytest.mark.parametrize(("model", "mode", "architecture", "says"), [
    ("student-t5", "prefix", "seq2seq", "The task prefix `predict:` leads the input."),
    ("student-t5", "one_encoder", "seq2seq", "pass it as `decoder_input_ids`"),
    ("teacher-a", "prefix", "causal", "decode only the new tokens"),
])
def test_the_cards_code_loads_the_model_and_answers(tiny_models, model, mode, architecture, says):
    card = model_card(_report(mode, architecture, model))
    assert says in card
    [code] = re.findall(r"```python\n(.*?)```", card, re.DOTALL)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code.replace("PATH/TO/THIS/DIR", str(tiny_models / model)), {})  # noqa: S102 -- the card's own code
    assert printed.getvalue().endswith("\n")  # it ran to its last line, the decoded answer
