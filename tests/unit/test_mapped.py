"""Column-mapped files (``data/mapped.py``): answers as an option's text, letter or index, a folder of split files,
bad mappings and paths, and open questions when no ``choices`` column is mapped."""

from __future__ import annotations

import pytest

from tests.data_files import by_where, write
from tinyllm_ray.data.mapped import read_mapped
from tinyllm_ray.data.records import NO_LABEL, DataError, Row
from tinyllm_ray.data.schema import Question, problems

# -- column-mapped files ---------------------------------------------------------------------------------------

MAPPING = {"question": "q", "choices": "options", "answer": "gold", "id": "qid", "context": "passage"}


def test_read_mapped_answers_as_text_letter_or_index(tmp_path):
    options = ["red", "green", "blue"]
    path = write(tmp_path / "anything.jsonl", [
        {"qid": "t", "q": "Sky?", "options": options, "gold": "blue", "passage": "Look up."},
        {"qid": "L", "q": "Sky?", "options": options, "gold": "B"},
        {"qid": "l", "q": "Sky?", "options": options, "gold": "b"},
        {"qid": "p", "q": "Sky?", "options": options, "gold": "(c)"},
        {"qid": "i", "q": "Sky?", "options": options, "gold": 0},
        {"qid": "a", "q": "Sky?", "options": ["a", "b", "c"], "gold": "b"},
        {"q": "Sky?", "options": options, "gold": "Z"},
        {"q": "Sky?", "options": options, "gold": 3},
        {"q": "Sky?", "options": options, "gold": "purple"},
        {"q": "Sky?", "options": options, "gold": ""},
        {"q": "Sky?", "options": "red, green", "gold": 0},
        {"q": "Sky?", "options": options},
        {"q": "Sky?", "options": options, "gold": True},
    ])
    rows = read_mapped(path, MAPPING)
    assert list(rows) == ["train"]
    got = by_where(rows["train"])
    assert got["anything.jsonl:line 1"] == Question(id="t", question="Sky?", choices=("red", "green", "blue"),
                                                    answer="blue", context="Look up.")
    assert [got[f"anything.jsonl:line {n}"].answer for n in range(2, 7)] == ["green", "green", "blue", "red", "b"]
    assert [v for v in got.values() if isinstance(v, str)] == [
        "answer key 'Z' is not among the labels A, B, C",
        "answer index 3 is out of range for 3 choices",
        "'gold' value 'purple' is neither a choice, a letter nor a 0-based index",
        "no answer label",
        "'options' is a str, not a list",
        "missing 'gold'",
        "'gold' value True is neither a choice, a letter nor a 0-based index",
    ]


def test_read_mapped_directory_parquet_and_derived_ids(tmp_path):
    write(tmp_path / "set_train.parquet", [{"question": "One?", "choices": ["1", "2"], "answer": 0}])
    write(tmp_path / "set_test.json", [{"question": "Two?", "choices": ["1", "2"], "answer": "2"}])
    rows = read_mapped(tmp_path, {"question": "question", "choices": "choices", "answer": "answer"})
    assert rows == {
        "train": [Row("set_train.parquet:row 0",
                      Question(id="set_train.parquet-row-0", question="One?", choices=("1", "2"), answer="1"))],
        "test": [Row("set_test.json:item 0",
                     Question(id="set_test.json-item-0", question="Two?", choices=("1", "2"), answer="2"))],
    }


def test_read_mapped_rejects_bad_mappings_and_paths(tmp_path):
    path = write(tmp_path / "q.jsonl", [{}])
    with pytest.raises(DataError, match="columns: unknown key 'rationale'"):
        read_mapped(path, {**MAPPING, "rationale": "r"})
    with pytest.raises(DataError, match="columns: 'answer' must be given"):  # without 'choices': open questions
        read_mapped(path, {"question": "q"})
    with pytest.raises(DataError, match=r"absent\.jsonl does not exist$"):
        read_mapped(tmp_path / "absent.jsonl", MAPPING)
    with pytest.raises(DataError, match=r"not a \.json/\.jsonl/\.parquet file"):
        read_mapped(write(tmp_path / "q.csv", [{}], fmt="jsonl"), MAPPING)


# -- column-mapped files without choices -----------------------------------------------------------------------

def test_read_mapped_without_choices_gives_open_questions(tmp_path):
    path = tmp_path / "qa.jsonl"
    lines = [
        '{"qid": "t", "q": "Capital of France?", "a": " Paris "}',
        '{"qid": "i", "q": "Legs of 3 spiders?", "a": 24}',
        '{"qid": "f", "q": "Half of 5?", "a": 2.5}',
        '{"qid": "w", "q": "Dozen and a half?", "a": 18.0}',
        '{"qid": "c", "q": "Ignored options?", "options": ["x", "y"], "a": "x"}',
        '{"q": "Blank?", "a": "  "}',
        '{"q": "Bool?", "a": true}',
        '{"q": "NaN?", "a": NaN}',
        '{"q": "List?", "a": [1, 2]}',
        '{"q": "Missing?"}',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = read_mapped(path, {"question": "q", "answer": "a", "id": "qid"})
    got = by_where(rows["train"])
    assert got["qa.jsonl:line 1"] == Question(id="t", question="Capital of France?", choices=(), answer="Paris")
    assert [got[f"qa.jsonl:line {n}"].answer for n in (2, 3, 4, 5)] == ["24", "2.5", "18", "x"]
    assert all(got[f"qa.jsonl:line {n}"].is_open and not problems(got[f"qa.jsonl:line {n}"]) for n in range(1, 6))
    assert [got[f"qa.jsonl:line {n}"] for n in range(6, 11)] == [
        NO_LABEL,
        "'a' value True is neither text nor a number",
        "'a' is NaN, not a number",
        "'a' value [1, 2] is neither text nor a number",
        "missing 'a'",
    ]
    # with choices mapped, the same file is read as multiple choice, as before
    chosen = by_where(read_mapped(path, {"question": "q", "answer": "a", "choices": "options"})["train"])
    assert chosen["qa.jsonl:line 5"] == Question(id="qa.jsonl-line-5", question="Ignored options?",
                                                 choices=("x", "y"), answer="x")
    assert chosen["qa.jsonl:line 1"] == "missing 'options'"
