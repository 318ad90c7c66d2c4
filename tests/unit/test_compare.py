"""Unit tests for the comparison with the baselines (``compare: true``): which baselines a config makes, the
config rules, the rationale key the student stages share, and the side-by-side table of the report."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tinyllm_ray import compare, keys, report
from tinyllm_ray.config import ConfigError, TeacherConfig, from_dict, validate
from tinyllm_ray.data.load import LoadedData
from tinyllm_ray.data.synthetic import generate
from tinyllm_ray.results import StudentResult, TeacherResult
from tinyllm_ray.teachers import runner

HUB_ID = "google/flan-t5-small"


def config(**top):
    raw = {"student": {"model": HUB_ID}, "train": {"gamma": 1.0, "alpha": {"t1": 0.5}},
           "teachers": [{"name": "t1", "model": HUB_ID}, {"name": "t2", "model": HUB_ID}], **top}
    return from_dict(raw)


def test_baselines_are_label_only_then_each_teacher_alone_with_its_own_weight() -> None:
    out = compare.variants(config(compare=True))
    assert {name: c.task_weights() for name, c in out.items()} == {
        "label-only": {"answer": 1.0, "t1": 0.0, "t2": 0.0},
        "only-t1": {"answer": 1.0, "t1": 0.5, "t2": 0.0},
        "only-t2": {"answer": 1.0, "t1": 0.0, "t2": 1.0},
    }
    same = {name: dataclasses.replace(c.train, alpha={}) for name, c in out.items()}
    assert all(t == dataclasses.replace(config().train, alpha={}) for t in same.values())  # the same budget


def test_with_one_teacher_the_single_teacher_baseline_is_the_student_itself() -> None:
    one = from_dict({"student": {"model": HUB_ID}, "teachers": [{"name": "t1", "model": HUB_ID}], "compare": True})
    assert list(compare.variants(one)) == ["label-only"]


@pytest.mark.parametrize(("top", "message"), [
    ({"tune": {"gamma": [1.0, 2.0]}}, "not in a sweep"),
    ({"teachers": []}, "nothing to compare"),
    ({"train": {"gamma": 0.0, "alpha": {"t1": 1.0}}}, "label-only baseline would learn nothing"),
])
def test_compare_config_rules(top, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        validate(config(compare=True, **top), check_paths=False)
    assert any(line.strip().startswith("compare:") for line in str(info.value).splitlines())


def test_rationales_key_ignores_how_fast_teachers_run_and_whether_they_are_evaluated() -> None:
    c = config()
    faster = [dataclasses.replace(t, replicas=4, batch_size=64, evaluate=False) for t in c.teachers]
    assert keys.rationales_key(dataclasses.replace(c, teachers=faster)) == keys.rationales_key(c)
    hotter = [dataclasses.replace(c.teachers[0], temperature=0.7), c.teachers[1]]
    assert keys.rationales_key(dataclasses.replace(c, teachers=hotter)) != keys.rationales_key(c)


def test_a_teacher_stage_key_covers_the_questions_it_answers_only_when_evaluated() -> None:
    splits = generate(4, 2, 2, seed=0)
    teacher = TeacherConfig(name="t", model="m")
    quiet = dataclasses.replace(teacher, evaluate=False)
    held_out = {"valid": splits["valid"], "test": splits["test"]}
    assert keys.teacher_key(quiet, splits["train"], held_out) == keys.teacher_key(quiet, splits["train"])
    assert keys.teacher_key(teacher, splits["train"], held_out) != keys.teacher_key(teacher, splits["train"])
    other = {"valid": splits["valid"], "test": splits["test"][:1]}
    assert keys.teacher_key(teacher, splits["train"], other) != keys.teacher_key(teacher, splits["train"], held_out)


def test_answer_prompts_show_the_teachers_own_rationales_of_their_examples() -> None:
    splits = generate(6, 2, 0, seed=0)
    train, valid = splits["train"], splits["valid"]
    teacher = TeacherConfig(name="t", model="m", shots=2)
    own = {q.id: f"my reasoning about {q.id}." for q in train}
    prompts_by_id = runner.answer_variants(teacher, valid, train, own)
    for q in valid:
        fullest = prompts_by_id[q.id][0]
        assert fullest.count("my reasoning about") == 2 and fullest.rstrip().endswith("Explanation:")
        assert f"Answer: ({q.answer_letter})" not in fullest
    similar = runner.answer_variants(dataclasses.replace(teacher, shots_mode="similar"), valid, train, {})
    assert all(len(v) == 3 for v in similar.values())  # 2 shots, 1, none


def _report(baselines=None, teachers=None) -> dict:
    c = config(compare=baselines is not None)
    data = LoadedData(splits={"train": [], "valid": [], "test": []}, rejects=[], rows_read={}, files=[],
                      precomputed={}, valid_from_train=False)
    accuracy = {"valid": 0.5, "test": 0.45, "rank_valid": 0.6, "rank_test": 0.55}
    student = StudentResult(steps=10, seconds=3.0, best_step=10)
    teachers = [TeacherResult.of(t["name"], t["model"], t) for t in teachers or []]
    return report.build_report(c, Path("/runs/r"), data, teachers, student, accuracy, "seq2seq", {"total_s": 9.0},
                               baselines)


TEACHER = {"name": "t1", "model": "m", "rationales": 4, "rejected": 0, "rejected_by_reason": {},
           "acceptance_rate": 1.0, "tokens_generated": 9, "seconds": 2.0, "evaluated": True,
           "valid_accuracy": 0.3, "test_accuracy": 0.25, "unparsed": {"valid": 1, "test": 2}}
PRECOMPUTED = {**TEACHER, "name": "flan-t5-xl", "evaluated": False, "valid_accuracy": None, "test_accuracy": None,
               "unparsed": None, "not_evaluated_because": "precomputed rationales were written with the gold answer"}


def test_the_report_puts_teachers_baselines_and_student_side_by_side() -> None:
    baselines = {"label-only": {"valid_accuracy": 0.4, "test_accuracy": 0.35, "valid_accuracy_rank": 0.5,
                                "test_accuracy_rank": 0.45, "steps": 10, "seconds": 2.5, "loss_weights": {}}}
    r = _report(baselines, [TEACHER, PRECOMPUTED])
    assert [(row["row"], row["test_accuracy"]) for row in r["comparison"]] == [
        ("teacher t1 (answers by itself)", 0.25),
        ("teacher flan-t5-xl (answers by itself)", None),
        ("student, label-only", 0.35),
        ("student, all teachers (TinyLLM)", 0.45),
    ]
    md = report.render_markdown(r)
    assert "| teacher t1 (answers by itself) | 0.300 | 0.250 |" in md
    assert "| student, label-only | 0.400 | 0.350 | 0.500 | 0.450 | 10 |" in md
    assert "Not evaluated: precomputed rationales were written with the gold answer." in md
    assert "Set `compare: true`" not in md
    cells = [re.split(r"\s{2,}", line) for line in report.console_summary(r).splitlines()]
    assert ["student, all teachers (TinyLLM)", "0.500 (0.600)", "0.450 (0.550)", "10", "3.0"] in cells
    assert ["teacher t1 (answers by itself)", "0.300", "0.250", "n/a", "2.0"] in cells


def test_without_compare_the_report_says_how_to_get_the_baselines() -> None:
    r = _report(None, [TEACHER])
    assert "baselines" not in r and [row["kind"] for row in r["comparison"]] == ["teacher", "student"]
    assert "Set `compare: true`" in report.render_markdown(r)
