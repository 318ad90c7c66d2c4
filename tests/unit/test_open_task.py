"""Open-answer tasks without Ray: the task a dataset gets and the rows of the other kind rejected, the scorer
inferred or set, the stage keys of multiple-choice runs unchanged, the prompts without options, teachers' own
answers scored by the scorer, and the report naming the scorer and the skipped rank classification."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from tinyllm_ray import keys, markers, prepare, prompts
from tinyllm_ray.config import ConfigError, DataConfig, from_dict
from tinyllm_ray.config.checks import validate
from tinyllm_ray.data.load import load_data
from tinyllm_ray.data.schema import Question, problems
from tinyllm_ray.teachers import store

from .test_load import cfg, question, source


def open_q(qid: str, answer: str = "12") -> Question:
    return Question(id=qid, question=f"How many in {qid}?", choices=(), answer=answer)


def test_a_dataset_without_choices_is_open_and_rows_with_choices_are_rejected() -> None:
    loaded = load_data(cfg(), source(train=[open_q("a"), open_q("b"), question("c")], valid=[open_q("v")]))
    assert loaded.task == "open" and loaded.scorer == "numeric"
    assert [q.id for q in loaded.splits["train"]] == ["a", "b"]
    assert loaded.rejects == [{"split": "train", "where": "mem:train:2", "id": "c",
                               "reason": "3 choices but data.task is open"}]


def test_a_dataset_with_choices_stays_multiple_choice_and_open_rows_are_rejected() -> None:
    loaded = load_data(cfg(), source(train=["a", open_q("b"), "c"]))
    assert loaded.task == "choice" and loaded.scorer == "choice"
    assert [r["reason"] for r in loaded.rejects] == ["0 choice(s); at least 2 needed (data.task is choice)"]


def test_data_task_and_scorer_as_set_win_over_what_the_data_suggests() -> None:
    loaded = load_data(cfg(task="open", scorer="exact"), source(train=[open_q("a"), open_q("b"), "c"]))
    assert loaded.task == "open" and loaded.scorer == "exact"  # numbers, but scored as text as asked
    assert load_data(cfg(), source(train=[open_q("a", "Paris"), open_q("b")])).scorer == "exact"


def test_an_empty_open_answer_is_a_problem_and_an_open_question_needs_no_choices() -> None:
    assert problems(open_q("b", " ")) == ["empty answer"]
    assert problems(open_q("b")) == []
    assert problems(dataclasses.replace(question("c"), choices=("x",), answer="x")) == ["1 choice(s); at least 2 needed"]


def test_the_built_in_dataset_has_an_open_variant_with_the_same_questions() -> None:
    choice = load_data(cfg(dataset="synthetic", n_train=20, n_valid=4, n_test=4))
    opened = load_data(cfg(dataset="synthetic", n_train=20, n_valid=4, n_test=4, task="open"))
    assert opened.task == "open" and choice.task == "choice"
    assert [(q.id, q.question, q.answer) for q in opened.splits["train"]] == \
        [(q.id, q.question, q.answer) for q in choice.splits["train"]]
    assert all(q.is_open for qs in opened.splits.values() for q in qs)


def test_a_scorer_for_a_multiple_choice_task_is_a_config_error() -> None:
    config = from_dict({"data": {"task": "choice", "scorer": "numeric"}, "student": {"model": "s"}})
    with pytest.raises(ConfigError, match="data.scorer: 'numeric' scores open answers; data.task is choice"):
        validate(config, check_paths=False)


def test_multiple_choice_stage_keys_do_not_change_and_an_open_task_changes_them() -> None:
    data = DataConfig()
    old_style = {f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.name not in ("task", "scorer")}
    assert markers.stage_key(data) == markers.stage_key(old_style)  # the key before open tasks existed
    assert markers.stage_key(dataclasses.replace(data, task="choice")) == markers.stage_key(data)
    assert markers.stage_key(dataclasses.replace(data, task="open")) != markers.stage_key(data)
    opened = dataclasses.replace(data, task="open")
    assert markers.stage_key(dataclasses.replace(opened, scorer="exact")) != markers.stage_key(opened)


def test_resolving_an_open_task_selects_checkpoints_by_generating() -> None:
    config = from_dict({"student": {"model": "s"}})
    loaded = load_data(cfg(), source(train=[open_q("a"), open_q("b")]))
    resolved = prepare.resolve_task(config, loaded)
    assert (resolved.data.task, resolved.data.scorer, resolved.eval.select_on) == ("open", "numeric", "generate")
    choice = prepare.resolve_task(config, load_data(cfg(), source(train=["a", "b"])))
    assert choice == config  # a multiple-choice run: as written
    assert keys.rationales_key(choice) == keys.rationales_key(config)  # resolved: same keys as before


def test_open_prompts_have_no_options_and_say_the_answer_itself() -> None:
    q, shot = open_q("a", "7"), open_q("b", "4")
    text = prompts.teacher_prompt(q, [shot], ["2 + 2 = 4."])
    assert "Options:" not in text and "multiple-choice" not in text
    assert text.startswith(prompts.OPEN_INSTRUCTION)
    assert text.endswith("Answer: 7\nExplain step by step why 7 is the correct answer.\nExplanation:")
    asked = prompts.answer_prompt(q, [shot], ["2 + 2 = 4."])
    assert asked.startswith(prompts.OPEN_ANSWER_INSTRUCTION) and "Answer: 7" not in asked
    assert "2 + 2 = 4. The answer is 4." in asked  # the example concludes with its answer
    assert "2 + 2 = 4. The answer is 4. The answer is 4." not in prompts.answer_prompt(q, [shot], ["2 + 2 = 4. The answer is 4."])
    mine = prompts.TeacherText(instruction="Solve these math problems.")
    assert prompts.teacher_prompt(q, [], text=mine).startswith("Solve these math problems.")  # the user's words stay
    assert prompts.student_input(q, "answer") == "predict: Q: How many in a?"


def test_teachers_own_open_answers_are_scored_by_the_scorer() -> None:
    table = pa.table({"id": ["a", "b", "c", "d"], "role": ["test"] * 4, "predicted": [-1] * 4,
                      "reject_reason": ["", "", "no_answer", ""], "said": ["1,200 dollars", "12 apples", "", "The Eiffel Tower"]})
    splits = {"test": [open_q("a", "1200"), open_q("b", "12"), open_q("c", "3"), open_q("d", "Eiffel tower")]}
    numeric = store.evaluation(table, splits, "numeric")
    assert numeric["test_accuracy"] == 0.5 and numeric["unparsed"] == {"test": 1}
    assert store.evaluation(table, splits, "exact")["test_accuracy"] == 0.25  # only "The Eiffel Tower"


def test_a_store_written_before_open_answers_reads_with_an_empty_said(tmp_path) -> None:
    old = store.SCHEMA.remove(store.SCHEMA.get_field_index("said"))
    directory = store.teacher_dir(tmp_path, "t")
    directory.mkdir(parents=True)
    import pyarrow.parquet as pq

    row = {name: [0] if old.field(name).type == pa.int64() else ["x"] for name in old.names}
    pq.write_table(pa.table(row, schema=old), directory / "part-old.parquet")
    assert store.stored(tmp_path, "t", ["id", "said"]).column("said").to_pylist() == [""]
