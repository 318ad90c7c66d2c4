"""``load_data`` and ``infer_format`` (``data/load.py``): duplicate ids, strict mode, the seeded valid hold-out,
``max_train``, missing splits, reject counts, precomputed rationales aligned with the kept training questions,
on hand-built ``Source`` objects and on official-layout fixture dirs; and, when ``../shared/data`` is there, on
the TinyLLM authors' real files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.data_files import gsm8k, write
from tests.helpers import SHARED_DATA
from tinyllm_ray.config import PRECOMPUTED_TEACHERS, ConfigError, DataConfig
from tinyllm_ray.data import official
from tinyllm_ray.data.load import LoadedData, Source, infer_format, load_data
from tinyllm_ray.data.records import DataError, Row
from tinyllm_ray.data.schema import Question

from .test_official import TOY, cot, make_dataset, write_cot

FLAN, LLAMA = PRECOMPUTED_TEACHERS


def question(qid: str, text: str | None = None, n: int = 3) -> Question:
    choices = tuple(f"option {c} of {qid}" for c in "abcde"[:n])
    return Question(id=qid, question=text or f"What is the answer to {qid}?", choices=choices, answer=choices[-1])


def rows(split: str, items: list) -> list[Row]:
    """Rows at ``mem:<split>:<i>``: a ``Question``, an id (made into one) or a reject reason (``!reason``)."""
    out = []
    for i, item in enumerate(items):
        where = f"mem:{split}:{i}"
        if isinstance(item, str) and item.startswith("!"):
            out.append(Row(where, None, item[1:]))
        else:
            out.append(Row(where, item if isinstance(item, Question) else question(item)))
    return out


def source(**splits: list) -> Source:
    return Source({split: rows(split, items) for split, items in splits.items()})


def ids(questions: list[Question]) -> list[str]:
    return [q.id for q in questions]


def cfg(**kw) -> DataConfig:
    return DataConfig(dataset=kw.pop("dataset", "toy"), **kw)


# -- duplicates, rejects, strict -------------------------------------------------------------------------------

def test_duplicate_ids_rejected_and_kept_once():
    first_b = question("b", "The first b?")
    src = source(train=["a", first_b, "c", "a"], valid=[question("b", "Another b?"), "d"], test=["c", "e", "d"])
    loaded = load_data(cfg(), src)
    assert {s: ids(qs) for s, qs in loaded.splits.items()} == {"train": ["a", "b", "c"], "valid": ["d"], "test": ["e"]}
    assert loaded.splits["train"][1] is first_b  # the first one read is kept
    assert loaded.rejects == [
        {"split": "train", "where": "mem:train:3", "id": "a", "reason": "duplicate id"},
        {"split": "valid", "where": "mem:valid:0", "id": "b", "reason": "duplicate id"},
        {"split": "test", "where": "mem:test:0", "id": "c", "reason": "duplicate id"},
        {"split": "test", "where": "mem:test:2", "id": "d", "reason": "duplicate id"},
    ]
    assert not loaded.valid_from_train


def test_rejected_rows_listed_with_reason_and_no_id():
    loaded = load_data(cfg(), source(train=["a", "!missing 'id'", "b"], valid=["v", "!1 choice(s); at least 2 needed"]))
    assert ids(loaded.splits["train"]) == ["a", "b"]
    assert loaded.rejects == [
        {"split": "train", "where": "mem:train:1", "id": "", "reason": "missing 'id'"},
        {"split": "valid", "where": "mem:valid:1", "id": "", "reason": "1 choice(s); at least 2 needed"},
    ]


@pytest.mark.parametrize("train, valid, where, reason", [
    (["a", "!answer 'x' is not among the choices", "b"], ["v"], "mem:train:1", "answer 'x' is not among the choices"),
    (["a", "b"], ["v", "a"], "mem:valid:1", "duplicate id"),
])
def test_strict_fails_on_first_reject(train, valid, where, reason):
    src = source(train=train, valid=valid)
    with pytest.raises(DataError) as err:
        load_data(cfg(strict=True), src)
    assert str(err.value) == f"{where}: {reason} (data.strict is on)"
    assert len(load_data(cfg(strict=False), src).rejects) == 1


def test_strict_passes_clean_data():
    loaded = load_data(cfg(strict=True), source(train=["a", "b"], valid=["c"], test=["d"]))
    assert loaded.rejects == []


def test_reject_counts_and_rows_read():
    src = source(train=["a", "!missing 'id'", "!missing 'id'", "a", "!duplicate choices"],
                 valid=["v", "!empty 'question'"], test=["t", "u"])
    loaded = load_data(cfg(), src)
    assert loaded.rows_read == {"train": 5, "valid": 2, "test": 2}
    assert loaded.reject_counts() == {
        "train": {"missing 'id'": 2, "duplicate id": 1, "duplicate choices": 1},
        "valid": {"empty 'question'": 1},
        "test": {},
    }


def test_rows_read_only_for_splits_present():
    loaded = load_data(cfg(), source(train=["a", "b", "c"]))
    assert loaded.rows_read == {"train": 3}
    assert loaded.reject_counts() == {"train": {}}
    assert loaded.files == []


# -- valid held out of train -----------------------------------------------------------------------------------

TEST_IDS = [f"t{i}" for i in range(5)]


def held_out(n: int, seed: int = 0, fraction: float = 0.1) -> LoadedData:
    return load_data(cfg(seed=seed, valid_fraction=fraction), source(train=[f"q{i}" for i in range(n)], test=TEST_IDS))


@pytest.mark.parametrize("n, fraction, size", [(20, 0.1, 2), (40, 0.25, 10), (7, 0.1, 1), (3, 0.1, 1), (9, 0.5, 4)])
def test_valid_held_out_of_train(n, fraction, size):
    loaded = held_out(n, fraction=fraction)
    assert loaded.valid_from_train
    train, valid = ids(loaded.splits["train"]), ids(loaded.splits["valid"])
    assert len(valid) == size and len(train) == n - size
    assert not set(train) & set(valid)
    # Both keep the order read; together they are the whole training split.
    everything = [f"q{i}" for i in range(n)]
    assert train == [x for x in everything if x in train] and valid == [x for x in everything if x in valid]
    assert set(train) | set(valid) == set(everything)
    # The test split is never used for selection.
    assert ids(loaded.splits["test"]) == TEST_IDS


def test_hold_out_is_seeded():
    a, b, other = held_out(30, seed=3), held_out(30, seed=3), held_out(30, seed=4)
    assert ids(a.splits["valid"]) == ids(b.splits["valid"])
    assert ids(a.splits["train"]) == ids(b.splits["train"])
    assert ids(a.splits["valid"]) != ids(other.splits["valid"])
    assert ids(a.splits["test"]) == ids(other.splits["test"]) == TEST_IDS


def test_hold_out_ignores_test_contents():
    # The same train with a different (or no) test split gives the same hold-out.
    train = [f"q{i}" for i in range(25)]
    with_test = load_data(cfg(seed=1), source(train=train, test=["x", "y", "z"]))
    without = load_data(cfg(seed=1), source(train=train))
    assert ids(with_test.splits["valid"]) == ids(without.splits["valid"])
    assert "test" not in without.splits


def test_no_hold_out_when_valid_exists():
    loaded = load_data(cfg(), source(train=["a", "b", "c"], valid=["v"]))
    assert not loaded.valid_from_train
    assert ids(loaded.splits["train"]) == ["a", "b", "c"] and ids(loaded.splits["valid"]) == ["v"]


def test_hold_out_when_every_valid_row_is_rejected():
    loaded = load_data(cfg(), source(train=[f"q{i}" for i in range(10)], valid=["!missing 'id'"]))
    assert loaded.valid_from_train and len(loaded.splits["valid"]) == 1


def test_max_train_truncates_after_hold_out():
    full = held_out(20, seed=2, fraction=0.25)
    cut = load_data(cfg(seed=2, valid_fraction=0.25, max_train=4),
                    source(train=[f"q{i}" for i in range(20)], test=TEST_IDS))
    assert ids(cut.splits["valid"]) == ids(full.splits["valid"])  # 5 held out of all 20, not of 4
    assert ids(cut.splits["train"]) == ids(full.splits["train"])[:4]
    assert ids(cut.splits["test"]) == TEST_IDS


def test_max_train_with_valid_split():
    loaded = load_data(cfg(max_train=2), source(train=["a", "!missing 'id'", "b", "c"], valid=["v"]))
    assert ids(loaded.splits["train"]) == ["a", "b"]
    assert load_data(cfg(max_train=10), source(train=["a", "b"], valid=["v"])).splits["train"] == [
        question("a"), question("b")]


# -- missing splits --------------------------------------------------------------------------------------------

def test_missing_test_split_has_no_key():
    loaded = load_data(cfg(), source(train=["a", "b"], valid=["v"]))
    assert set(loaded.splits) == {"train", "valid"}


def test_test_split_with_only_rejects_has_no_key():
    loaded = load_data(cfg(), source(train=["a"], valid=["v"], test=["!missing 'id'", "a"]))
    assert "test" not in loaded.splits
    assert loaded.reject_counts()["test"] == {"missing 'id'": 1, "duplicate id": 1}


@pytest.mark.parametrize("splits", [
    {"valid": ["v"], "test": ["t"]},
    {"train": ["!missing 'id'", "!missing 'id'"], "valid": ["v"]},
    {"train": []},
])
def test_require_train(splits):
    with pytest.raises(DataError, match="dataset 'toy': no usable training questions"):
        load_data(cfg(), source(**splits))
    loaded = load_data(cfg(), source(**splits), require_train=False)
    assert loaded.splits["train"] == []
    assert not loaded.valid_from_train


def test_require_train_message_names_path(tmp_path):
    d = make_dataset(tmp_path, questions={"valid": TOY["valid"]}, cot_splits=())
    with pytest.raises(DataError, match=f"no usable training questions in {re.escape(str(d))}"):
        load_data(cfg(path=str(d)))
    loaded = load_data(cfg(path=str(d)), require_train=False)
    assert ids(loaded.splits["valid"]) == ["v-1", "v-2"] and loaded.rows_read == {"valid": 2}


# -- official fixture dirs and precomputed rationales ----------------------------------------------------------

def test_official_dir_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(official, "PER_FILE", 2)
    d = make_dataset(tmp_path)
    loaded = load_data(cfg(path=str(d)))
    assert {s: ids(qs) for s, qs in loaded.splits.items()} == {
        s: [str(r["id"]) for r in records] for s, records in TOY.items()}
    assert loaded.rows_read == {"train": 5, "valid": 2, "test": 2}
    assert loaded.precomputed == {}  # rationales: teachers (the default)
    assert str(d / "toy_train.json") in loaded.files and str(d / "llm" / "train_CoT_2.json") in loaded.files


def precomputed_dir(tmp_path: Path) -> tuple[Path, list[dict]]:
    """Train of 7 (CoT files of 2, 2, 2, 1) with a rejected row and a duplicate id in the middle."""
    train = [*TOY["train"],
             {"id": "x-9", "question": "Which metal is attracted to a magnet?", "choices": ["iron", "wood"],
              "answer": "iron"},
             {"id": "x-10", "question": "Do bees make honey?", "choices": ["yes", "no"], "answer": "yes"}]
    train[1] = {**train[1], "answer": "perhaps"}                       # rejected: not among the choices
    train[4] = {**train[4], "id": "7-980"}                             # duplicate of train[0]'s id
    d = make_dataset(tmp_path, questions={**TOY, "train": train}, cot_splits=("valid",))
    texts = [cot(r) for r in train[:1]]
    texts.append(cot({**train[1], "answer": "yes"}, flan="Reasoning for the rejected row."))
    texts += [cot(r) for r in train[2:4]]
    texts.append(cot(train[4], flan="Reasoning for the duplicate row."))
    texts += [cot(train[5], llama=None), cot(train[6])]
    write_cot(d / "llm", "train", texts, 2)
    return d, train


def test_precomputed_maps_kept_training_ids_to_their_own_rationale(tmp_path, monkeypatch):
    monkeypatch.setattr(official, "PER_FILE", 2)
    d, train = precomputed_dir(tmp_path)
    loaded = load_data(cfg(path=str(d), rationales="precomputed"))
    kept = ["7-980", "pm-7", "42", "x-9", "x-10"]
    assert ids(loaded.splits["train"]) == kept
    assert loaded.reject_counts()["train"] == {"answer 'perhaps' is not among the choices": 1, "duplicate id": 1}
    assert set(loaded.precomputed) == {FLAN, LLAMA}
    assert loaded.precomputed[FLAN] == {qid: (f"Reasoning for {qid} goes here.", "") for qid in kept}
    letters = {q.id: q.answer_letter for q in loaded.splits["train"]}
    assert loaded.precomputed[LLAMA] == {
        qid: ("", "missing") if qid == "x-9" else
        (f"The llama thinks about {qid}.\nSo the answer is ({letters[qid]}).", "") for qid in kept}


def test_precomputed_covers_held_out_and_truncated_train(tmp_path, monkeypatch):
    monkeypatch.setattr(official, "PER_FILE", 2)
    d, _ = precomputed_dir(tmp_path)
    (d / "toy_valid.json").unlink()
    loaded = load_data(cfg(path=str(d), rationales="precomputed", max_train=2, valid_fraction=0.2))
    assert loaded.valid_from_train and len(loaded.splits["valid"]) == 1 and len(loaded.splits["train"]) == 2
    used = {q.id for s in ("train", "valid") for q in loaded.splits[s]}
    assert used <= set(loaded.precomputed[FLAN]) == set(loaded.precomputed[LLAMA])
    assert all(loaded.precomputed[FLAN][qid] == (f"Reasoning for {qid} goes here.", "") for qid in used)


def test_precomputed_without_train_cot_files(tmp_path, monkeypatch):
    monkeypatch.setattr(official, "PER_FILE", 2)
    d = make_dataset(tmp_path, cot_splits=("valid", "test"))
    with pytest.raises(DataError, match=r"data.rationales is 'precomputed' but .* has no llm/train_CoT_<k>\.json"):
        load_data(cfg(path=str(d), rationales="precomputed"))
    assert load_data(cfg(path=str(d))).precomputed == {}


def test_precomputed_with_a_source_without_rationales():
    with pytest.raises(DataError, match="precomputed"):
        load_data(cfg(rationales="precomputed"), source(train=["a", "b"], valid=["v"]))


def test_precomputed_from_a_hand_built_source():
    src = Source(rows={"train": rows("train", ["a", "!missing 'id'", "b"])},
                 rationales={t: {"train": [(f"{t} a", ""), ("", "question rejected"), (f"{t} b", "")]}
                             for t in PRECOMPUTED_TEACHERS},
                 files=["somewhere.json"])
    loaded = load_data(cfg(rationales="precomputed"), src)
    assert loaded.precomputed == {t: {"a": (f"{t} a", ""), "b": (f"{t} b", "")} for t in PRECOMPUTED_TEACHERS}
    assert loaded.files == ["somewhere.json"]


def test_synthetic_by_default():
    data = DataConfig(n_train=12, n_valid=4, n_test=3, seed=5)
    loaded = load_data(data)
    assert {s: len(qs) for s, qs in loaded.splits.items()} == {"train": 12, "valid": 4, "test": 3}
    assert loaded.rejects == [] and not loaded.valid_from_train
    assert ids(loaded.splits["train"]) == ids(load_data(data).splits["train"])


# -- infer_format and paths ------------------------------------------------------------------------------------

def test_infer_format(tmp_path):
    d = make_dataset(tmp_path, cot_splits=())
    plain = tmp_path / "plain"
    plain.mkdir()
    assert infer_format(DataConfig()) == "synthetic"
    assert infer_format(cfg(path=str(plain / "x.jsonl"), columns={"question": "q"})) == "jsonl"
    assert infer_format(cfg(path=str(d), columns={"question": "q"})) == "jsonl"  # columns win
    assert infer_format(cfg(path=str(d))) == "official"
    assert infer_format(cfg(dataset="obqa", path=str(d))) == "official"
    assert infer_format(cfg(dataset="obqa")) == "hub"
    assert infer_format(cfg(dataset="obqa", path=str(plain))) == "hub"
    assert infer_format(cfg(dataset="obqa", format="jsonl")) == "jsonl"  # set explicitly: taken as is
    assert infer_format(cfg(format="official")) == "official"


@pytest.mark.parametrize("with_path", [False, True])
def test_infer_format_unknown_name(tmp_path, with_path):
    data = cfg(dataset="mystery", path=str(tmp_path) if with_path else None)
    with pytest.raises(ConfigError) as err:
        infer_format(data)
    msg = str(err.value)
    assert msg.startswith("data.format: cannot tell how to read dataset 'mystery'")
    assert (f" at {tmp_path}" in msg) == with_path
    assert "obqa" in msg  # lists the hub datasets


def test_data_path_missing_or_absent(tmp_path):
    with pytest.raises(ConfigError, match=r"^data.path: dataset 'toy' in format 'official' needs a path"):
        load_data(cfg(format="official"))
    with pytest.raises(ConfigError, match=r"^data.path: .*nowhere does not exist"):
        load_data(cfg(format="official", path=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="^data.format"):
        load_data(cfg())


# -- the authors' real files (opt-in: only where ../shared/data exists) ----------------------------------------

@pytest.fixture(scope="module")
def shared() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no shared data at {SHARED_DATA}")
    return SHARED_DATA


def test_real_obqa(shared):
    if not (shared / "obqa").is_dir():
        pytest.skip("no obqa in the shared data")
    loaded = load_data(DataConfig(dataset="obqa", path=str(shared / "obqa"), rationales="precomputed"))
    assert loaded.rows_read == {"train": 4957, "valid": 500, "test": 500}
    assert not loaded.valid_from_train
    kept = {q.id for q in loaded.splits["train"]}
    assert len(kept) == len(loaded.splits["train"]) == 4957 - sum(loaded.reject_counts()["train"].values())
    for teacher in PRECOMPUTED_TEACHERS:
        by_id = loaded.precomputed[teacher]
        assert set(by_id) == kept
        reasons = {why for _, why in by_id.values()}
        # Every rationale echoes its own question: the files are in step with the question file.
        assert reasons <= {"", "empty", "missing"}, reasons
        assert sum(1 for text, why in by_id.values() if text and not why) > 0.9 * len(kept)
    assert all(text for text, _ in loaded.precomputed[FLAN].values())


@pytest.mark.parametrize("name", ["obqa", "arc", "riddle", "piqa"])
def test_real_dataset_reads(shared, name):
    d = shared / name
    if not d.is_dir():
        pytest.skip(f"no {name} in the shared data")
    assert infer_format(DataConfig(dataset=name, path=str(d))) == "official"
    loaded = load_data(DataConfig(dataset=name, path=str(d)), require_train=False)
    assert loaded.rows_read and all(n > 0 for n in loaded.rows_read.values())
    for split, n in loaded.rows_read.items():
        assert len(loaded.splits.get(split, [])) + sum(loaded.reject_counts()[split].values()) == n
    found = official.read_official(d)
    for teacher in PRECOMPUTED_TEACHERS:
        for split, aligned in found.rationales[teacher].items():
            assert len(aligned) == len(found.rows[split])
            assert not any(why == "echoed question does not match" for _, why in aligned), (split, teacher)


def test_one_training_question_and_no_valid_split_is_an_error():
    from tinyllm_ray.config import DataConfig
    from tinyllm_ray.data.load import Source, load_data
    from tinyllm_ray.data.records import DataError, Row
    from tinyllm_ray.data.schema import Question

    one = Source({"train": [Row("m:1", Question("a", "q?", ("y", "n"), "y"))]})
    with pytest.raises(DataError, match="too few to hold one out"):
        load_data(DataConfig(dataset="x"), one)
    two = Source({"train": [Row(f"m:{i}", Question(f"a{i}", "q?", ("y", "n"), "y")) for i in range(2)]})
    loaded = load_data(DataConfig(dataset="x", valid_fraction=0.9), two)
    assert len(loaded.splits["train"]) == 1 and len(loaded.splits["valid"]) == 1


def test_reading_pauses_the_cycle_collector_and_resumes_it_even_on_an_error(monkeypatch):
    """Reading makes millions of objects and no cycles: the collector's full passes made the cost per question grow
    with the dataset, so it is off while ``load_data`` reads and on again after, also when the data is refused."""
    import gc

    from tinyllm_ray.data import load

    seen: list[bool] = []
    real = load.read_source

    def reading(data):
        seen.append(gc.isenabled())
        return real(data)

    monkeypatch.setattr(load, "read_source", reading)
    assert gc.isenabled()
    load_data(DataConfig(dataset="synthetic", n_train=8, n_valid=2, n_test=2))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(DataError):
        load_data(cfg(), source=source(train=[]))
    assert gc.isenabled()


# -- open-answer data --------------------------------------------------------------------------------------

def test_gsm8k_load_data_counts_rejects_and_infers_an_open_numeric_task(tmp_path):
    write(tmp_path / "main" / "train-00000-of-00001.parquet",
          [gsm8k(f"Question {i}?", f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}") for i in range(10)]
          + [gsm8k("No mark?", "4"), gsm8k("Not a number?", "x\n#### lots")])
    write(tmp_path / "main" / "test-00000-of-00001.parquet", [gsm8k("Test?", "#### 3")])
    loaded = load_data(DataConfig(dataset="gsm8k", path=str(tmp_path)))
    assert loaded.reject_counts() == {"train": {"no '####' answer line": 1,
                                                "the '####' answer 'lots' is not a number": 1}, "test": {}}
    assert (loaded.task, loaded.scorer) == ("open", "numeric")
    assert loaded.valid_from_train and len(loaded.splits["train"]) + len(loaded.splits["valid"]) == 10
    assert all(q.is_open for split in loaded.splits.values() for q in split)
