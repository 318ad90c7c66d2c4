"""Datasets as they are published (``data/hub.py``, ``data/split_files.py``, ``data/load.py``, ``data/records.py``):
test splits without answers (PIQA, RiddleSense, CommonsenseQA), BioASQ's official ``{"questions": [...]}``
files, and an offline copy of the hub's parquet conversion (``<config>/<split>/0000.parquet``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data_files import labeled, write
from tinyllm_ray.config import DataConfig
from tinyllm_ray.data.hub import read_hub
from tinyllm_ray.data.load import load_data
from tinyllm_ray.data.records import NO_LABEL, DataError
from tinyllm_ray.report import dataset_lines


def _piqa(i: int, label: int) -> dict:
    return {"goal": f"How do I do thing {i}?", "sol1": f"Do it with a spoon {i}.", "sol2": f"Do it with a fork {i}.",
            "label": label}


def _riddle(i: int, key: str) -> dict:
    return {"question": f"What am I, riddle {i}?", "answerKey": key,
            "choices": labeled([f"candle {i}", f"clock {i}", f"lamp {i}"], ["A", "B", "C"])}


def _csqa(i: int, key: str) -> dict:
    return {"id": f"csqa-{i}", "question": f"Where would you keep thing {i}?", "question_concept": "thing",
            "answerKey": key, "choices": labeled([f"box {i}", f"shelf {i}", f"drawer {i}"], ["A", "B", "C"])}


# (dataset, file names, a labelled record, an unlabelled one): each as the hub publishes it
PUBLISHED = {
    "piqa": (("train.jsonl", "valid.jsonl", "test.jsonl"), lambda i: _piqa(i, i % 2), lambda i: _piqa(i, -1)),
    "riddlesense": (("rs_train.jsonl", "rs_dev.jsonl", "rs_test.jsonl"), lambda i: _riddle(i, "B"),
                    lambda i: _riddle(i, "")),
    "commonsenseqa": (("train.jsonl", "validation.jsonl", "test.jsonl"), lambda i: _csqa(i, "C"),
                      lambda i: _csqa(i, "")),
}


def publish(root: Path, dataset: str, n_train: int = 12, n_valid: int = 10, n_test: int = 7) -> None:
    (train, valid, test), labelled, unlabelled = PUBLISHED[dataset]
    write(root / train, [labelled(i) for i in range(n_train)])
    write(root / valid, [labelled(100 + i) for i in range(n_valid)])
    write(root / test, [unlabelled(200 + i) for i in range(n_test)])


@pytest.mark.parametrize("dataset", sorted(PUBLISHED))
@pytest.mark.parametrize("strict", [False, True])
def test_an_unlabelled_test_split_is_left_out_once_and_valid_gives_test(tmp_path, dataset, strict):
    publish(tmp_path, dataset)
    loaded = load_data(DataConfig(dataset=dataset, path=str(tmp_path), strict=strict, seed=3))
    assert loaded.unlabelled == {"test": 7}  # stated once, by split
    assert loaded.rejects == [] and loaded.reject_counts()["test"] == {}  # not bad data: no rejects, no stop
    assert loaded.test_from_valid and not loaded.valid_from_train
    valid, test = loaded.splits["valid"], loaded.splits["test"]
    assert (len(valid), len(test)) == (5, 5)  # the labelled valid split, halved
    assert not {q.id for q in valid} & {q.id for q in test}
    published_valid = read_hub(dataset, tmp_path)["valid"]
    assert sorted(q.id for q in valid + test) == sorted(r.question.id for r in published_valid)
    assert all(q.answer in q.choices for q in test)  # every question scored has its answer
    again = load_data(DataConfig(dataset=dataset, path=str(tmp_path), strict=strict, seed=3))
    assert [q.id for q in again.splits["test"]] == [q.id for q in test]  # the draw is seeded


def test_one_unlabelled_row_among_labelled_ones_is_a_reject(tmp_path):
    write(tmp_path / "train.jsonl", [_piqa(i, i % 2) for i in range(4)])
    write(tmp_path / "valid.jsonl", [_piqa(10, 0), _piqa(11, -1)])  # a broken row, not an unlabelled split
    loaded = load_data(DataConfig(dataset="piqa", path=str(tmp_path)))
    assert loaded.unlabelled == {} and not loaded.test_from_valid
    assert loaded.reject_counts()["valid"] == {NO_LABEL: 1}
    with pytest.raises(DataError, match="no answer label"):
        load_data(DataConfig(dataset="piqa", path=str(tmp_path), strict=True))


def test_the_report_says_which_split_was_left_out_and_where_test_came_from():
    lines = dataset_lines({"name": "piqa", "train": 12, "valid": 5, "test": 5, "rejected": {"test": {}},
                           "unlabelled": {"test": 3084}, "test_from_valid": True})
    assert lines == ["Dataset **piqa**: 12 train, 5 valid, 5 test (half of the labelled valid split) questions.",
                     "Published without answers, so left out of training and scoring: the test split (3084 rows)."]
    assert dataset_lines({"name": "obqa", "train": 1, "valid": 1, "test": 1})[1:] == []  # nothing to say


def _bioasq(qid: str, kind: str, exact, ideal) -> dict:
    return {"id": qid, "type": kind, "body": f"Is protein {qid} a kinase?", "exact_answer": exact,
            "ideal_answer": ideal, "documents": [], "snippets": [{"text": f"Protein {qid} phosphorylates."}]}


def test_bioasq_official_files_read_as_published(tmp_path):
    # pretty-printed {"questions": [...]} objects, named as in the official distribution
    (tmp_path / "training12b_new.json").write_text(json.dumps({"questions": [
        _bioasq("t1", "yesno", "yes", ["It does."]), _bioasq("t2", "factoid", [["PKA"]], ["PKA."]),
        _bioasq("t3", "yesno", "no", "It does not."), _bioasq("t4", "yesno", "yes", ["Yes."])]}, indent=4))
    for batch, ids in (("12B1", ["g1", "g2"]), ("12B2", ["g3"])):
        (tmp_path / f"{batch}_golden.json").write_text(json.dumps(
            {"questions": [_bioasq(i, "yesno", "no", ["No."]) for i in ids]}, indent=2))
    rows = read_hub("bioasq", tmp_path)
    assert sorted(rows) == ["test", "train"]
    assert [r.where for r in rows["test"]] == ["12B1_golden.json:question 0", "12B1_golden.json:question 1",
                                               "12B2_golden.json:question 0"]  # the batches, in order
    train = {r.where: r.question or r.reason for r in rows["train"]}
    assert train["training12b_new.json:question 1"] == "type 'factoid' is not a yes/no question"
    t1 = train["training12b_new.json:question 0"]
    assert (t1.id, t1.answer, t1.reference_rationale, t1.context) == ("t1", "yes", "It does.", "Protein t1 phosphorylates.")
    assert train["training12b_new.json:question 2"].reference_rationale == "It does not."  # a string, not a list
    loaded = load_data(DataConfig(dataset="bioasq", path=str(tmp_path)))
    assert len(loaded.splits["test"]) == 3 and loaded.valid_from_train  # no valid split is published


def _export(root: Path, config: str, split_dirs: dict[str, list[dict]]) -> None:
    for folder, records in split_dirs.items():
        half = len(records) // 2
        write(root / config / folder / "0000.parquet", records[:half])
        write(root / config / folder / "0001.parquet", records[half:])


def test_an_offline_copy_of_the_parquet_conversion_is_found(tmp_path):
    _export(tmp_path, "plain_text", {"train": [_piqa(i, i % 2) for i in range(6)],
                                     "validation": [_piqa(10 + i, 1) for i in range(4)],
                                     "test": [_piqa(20 + i, -1) for i in range(4)]})
    for path in (tmp_path, tmp_path / "plain_text"):  # the conversion's root, or its config folder
        rows = read_hub("piqa", path)
        assert {split: len(r) for split, r in rows.items()} == {"train": 6, "valid": 4, "test": 4}
        assert rows["train"][0].where == "train/0000.parquet:row 0" and rows["train"][5].where == "train/0001.parquet:row 2"
    loaded = load_data(DataConfig(dataset="piqa", path=str(tmp_path)))
    assert loaded.unlabelled == {"test": 4} and loaded.test_from_valid


def test_a_partial_conversion_is_used_only_without_the_full_split(tmp_path):
    _export(tmp_path, "default", {"partial-train": [_riddle(i, "A") for i in range(4)],
                                  "validation": [_riddle(10 + i, "A") for i in range(2)]})
    assert len(read_hub("riddlesense", tmp_path)["train"]) == 4
    _export(tmp_path, "default", {"train": [_riddle(i, "A") for i in range(8)]})
    assert len(read_hub("riddlesense", tmp_path)["train"]) == 8  # the full split wins
