"""Split files (``data/split_files.py``): which file names make which split, shards read in order, the folder
searched first, and what a folder without split files is told."""

from __future__ import annotations

import pytest

from tests.data_files import labeled, write
from tinyllm_ray.data.hub import read_hub
from tinyllm_ray.data.records import DataError
from tinyllm_ray.data.split_files import find_split_files

# -- split discovery -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("relative, split", [
    ("train.jsonl", "train"),
    ("obqa_validation.json", "valid"),
    ("obqa-valid.jsonl", "valid"),
    ("my_set-dev.parquet", "valid"),
    ("Test.jsonl", "test"),
    ("test-00000-of-00001.parquet", "test"),
    ("data/train-00000-of-00001.parquet", "train"),
    ("data/validation-00000-of-00001-5f1e1a3bd2a1c6c4.parquet", "valid"),
    ("data/obqa_test.json", "test"),
])
def test_split_file_patterns(tmp_path, relative, split):
    write(tmp_path / relative, [{}], fmt="parquet" if relative.endswith(".parquet") else "jsonl")
    (tmp_path / "README.md").write_text("not a split")
    (tmp_path / "pretrain.jsonl").write_text("")
    assert find_split_files(tmp_path) == {split: [tmp_path / relative]}


def test_shards_of_one_split_are_read_in_order(tmp_path):
    good = {"id": "1", "question_stem": "q", "choices": labeled(["a", "b"], ["A", "B"]), "answerKey": "A"}
    write(tmp_path / "train-00001-of-00002.parquet", [{**good, "id": "2"}])
    write(tmp_path / "train-00000-of-00002.parquet", [good])
    rows = read_hub("obqa", tmp_path)
    assert [row.question.id for row in rows["train"]] == ["1", "2"]


def test_root_files_take_precedence_over_data_dir(tmp_path):
    write(tmp_path / "train.jsonl", [{}])
    write(tmp_path / "data" / "test.jsonl", [{}])
    assert find_split_files(tmp_path) == {"train": [tmp_path / "train.jsonl"]}


def test_two_files_for_one_split(tmp_path):
    write(tmp_path / "train.jsonl", [{}])
    write(tmp_path / "obqa_train.json", [{}])
    with pytest.raises(DataError, match="several files for the train split: obqa_train.json, train.jsonl"):
        find_split_files(tmp_path)


def test_no_split_files_says_what_it_looked_for(tmp_path):
    write(tmp_path / "questions.jsonl", [{}])
    write(tmp_path / "train.csv", [{}], fmt="jsonl")
    with pytest.raises(DataError) as err:
        read_hub("obqa", tmp_path)
    message = str(err.value)
    assert "no split files in" in message and str(tmp_path / "data") in message and str(tmp_path / "main") in message
    assert ("<split>.<ext>, <name>_<split>.<ext>, <name>-<split>.<ext>, <split>-00000-of-00001.parquet or "
            "<split>/0000.parquet" in message)
    assert "split: train/validation/valid/dev/test; ext: json/jsonl/parquet" in message


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="absent does not exist$"):
        read_hub("obqa", tmp_path / "absent")


def test_truncated_json_names_the_file(tmp_path):
    path = tmp_path / "obqa_train.json"
    path.write_text('[{"id": "1", "question_stem": "q", "choices": {"text": ["a"', encoding="utf-8")
    with pytest.raises(DataError, match=r"obqa_train\.json: invalid or truncated JSON at line 1"):
        read_hub("obqa", tmp_path)
