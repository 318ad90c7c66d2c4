"""The TinyLLM authors' layout (``data/official.py``) on hand-written fixtures: question files as JSON arrays
and JSON Lines, good and malformed rows, the parts of one rationale string, rationale files aligned with the
questions across file boundaries (``PER_FILE`` made small), and every error naming its file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tinyllm_ray.data import official
from tinyllm_ray.data.official import (
    FLAN,
    LLAMA,
    looks_official,
    read_official,
    split_rationale,
    to_question,
)
from tinyllm_ray.data.records import DataError, Row, RowError
from tinyllm_ray.data.schema import Question

LONG_CONTEXT = (
    "Mitochondria are membrane-bound organelles that generate most of the chemical energy needed to power "
    "the cell's biochemical reactions. In this study we measured oxygen consumption in cultured fibroblasts "
    "before and after treatment, and found a consistent drop in respiration across all replicates. "
) * 6

TOY = {
    "train": [
        {"id": "7-980", "question": "The sun is responsible for",
         "choices": ["puppies learning new tricks", "children growing up and getting old",
                     "flowers wilting in a vase", "plants sprouting, blooming and wilting"],
         "answer": "plants sprouting, blooming and wilting"},
        {"id": "yn-1", "question": "Is the sky blue on a clear day?", "choices": ["yes", "no"], "answer": "yes"},
        {"id": "pm-7", "question": "Does the treatment reduce cellular respiration?", "context": LONG_CONTEXT,
         "choices": ["yes", "no", "maybe"], "answer": "yes"},
        {"id": 42, "question": "dresser",
         "choices": ["replace drawer with bobby pin ", "finish, woodgrain with  bobby pin "],
         "answer": "finish, woodgrain with  bobby pin "},
        {"id": "7-584", "question": "When standing miles away from Mount Rushmore",
         "choices": ["the mountains seem very close", "the mountains seem smaller than in photographs",
                     "the mountains look the same as from up close"],
         "answer": "the mountains seem smaller than in photographs"},
    ],
    "valid": [
        {"id": "v-1", "question": "What gets smaller as it gets fuller?",
         "choices": ["bit", "hole", "gallon", "mouse", "throw"], "answer": "hole"},
        {"id": "v-2", "question": "Can a fish climb a tree?", "choices": ["yes", "no"], "answer": "no"},
    ],
    "test": [
        {"id": "x-1", "question": "Which skin surface will produce the most heat when rubbed?",
         "choices": ["dry palms", "wet palms", "palms covered with oil"], "answer": "dry palms"},
        {"id": "x-2", "question": "Is ice colder than steam?", "choices": ["yes", "no"], "answer": "yes"},
    ],
}


def cot(record: dict, flan: str | None = None, llama: str | None = "default") -> str:
    """One authors' rationale string for ``record``: FLAN rationale, the answer, the echoed question and
    (unless ``llama`` is None) the LLaMA rationale; both rationales name the question id by default."""
    choices = [c.strip() for c in record["choices"]]
    letter = "abcde"[choices.index(record["answer"].strip())]
    flan = f"Reasoning for {record['id']} goes here." if flan is None else flan
    text = (f"{flan} Thus, the answer is ({letter}) {record['answer'].strip()}\n\nQ: {record['question']}\n"
            "Answer Choices:\n" + "\n".join(f"({l}) {c}" for l, c in zip("abcde", choices)))
    if llama is not None:
        llama = f"The llama thinks about {record['id']}.\nSo the answer is ({letter})." if llama == "default" else llama
        text += f" llama rationale: Let's think step by step.\n{llama}"
    return text


def write_questions(path: Path, records: list, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records, indent=4), encoding="utf-8")
    return path


def write_cot(llm: Path, split: str, texts: list[str], per_file: int) -> list[Path]:
    """``texts`` as ``<split>_CoT_<k>.json``, ``per_file`` strings a file (the last may hold fewer)."""
    llm.mkdir(parents=True, exist_ok=True)
    out = []
    for k, start in enumerate(range(0, max(len(texts), 1), per_file)):
        out.append(llm / f"{split}_CoT_{k}.json")
        out[-1].write_text(json.dumps(texts[start:start + per_file], indent=4), encoding="utf-8")
    return out


def make_dataset(root: Path, name: str = "toy", questions: dict | None = None, formats: dict | None = None,
                 cot_splits=("train", "valid", "test"), per_file: int = 2) -> Path:
    """A dataset dir in the authors' layout; train as JSON Lines, valid and test as JSON arrays by default."""
    questions = TOY if questions is None else questions
    formats = {"train": "jsonl", "valid": "json", "test": "json", **(formats or {})}
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for split, records in questions.items():
        write_questions(d / f"{name}_{split}.json", records, formats[split])
        if split in cot_splits:
            write_cot(d / "llm", split, [cot(r) for r in records], per_file)
    return d


def q(record: dict) -> Question:
    return Question(id=str(record["id"]), question=record["question"],
                    choices=tuple(c.strip() for c in record["choices"]), answer=record["answer"].strip(),
                    context=record.get("context", ""))


@pytest.fixture
def per_file_2(monkeypatch):
    monkeypatch.setattr(official, "PER_FILE", 2)


# -- question files --------------------------------------------------------------------------------------------

def test_reads_json_array_and_json_lines(tmp_path, per_file_2):
    d = make_dataset(tmp_path, formats={"train": "jsonl", "valid": "json", "test": "jsonl"})
    assert (d / "toy_train.json").read_text().startswith("{")
    assert (d / "toy_valid.json").read_text().startswith("[")
    found = read_official(d)
    assert {s: [r.question for r in rows] for s, rows in found.rows.items()} == {
        s: [q(r) for r in records] for s, records in TOY.items()}
    assert [r.where for r in found.rows["train"]] == [f"toy_train.json:line {i}" for i in range(1, 6)]
    assert [r.where for r in found.rows["valid"]] == ["toy_valid.json:item 0", "toy_valid.json:item 1"]
    assert [r.where for r in found.rows["test"]] == ["toy_test.json:line 1", "toy_test.json:line 2"]
    assert all(r.reason == "" for rows in found.rows.values() for r in rows)


def test_good_rows_exact_fields(tmp_path, per_file_2):
    found = read_official(make_dataset(tmp_path))
    train = [r.question for r in found.rows["train"]]
    assert train[0] == Question(id="7-980", question="The sun is responsible for",
                                choices=("puppies learning new tricks", "children growing up and getting old",
                                         "flowers wilting in a vase", "plants sprouting, blooming and wilting"),
                                answer="plants sprouting, blooming and wilting")
    assert train[1].choices == ("yes", "no") and train[1].answer_letter == "a"
    assert train[2].context == LONG_CONTEXT and train[2].choices == ("yes", "no", "maybe")
    # An integer id becomes text; choices and answer lose outer spaces (inner ones stay) and still match.
    assert train[3] == Question(id="42", question="dresser",
                                choices=("replace drawer with bobby pin", "finish, woodgrain with  bobby pin"),
                                answer="finish, woodgrain with  bobby pin")
    assert train[3].answer_index == 1
    assert [r.question.answer_letter for r in found.rows["valid"]] == ["b", "b"]


GOOD = {"id": "g-1", "question": "Is water wet?", "choices": ["yes", "no"], "answer": "yes"}

MALFORMED = [
    pytest.param({**GOOD, "answer": "sometimes"}, "answer 'sometimes' is not among the choices",
                 id="answer-not-a-choice"),
    pytest.param({**GOOD, "choices": ["yes"]}, "1 choice(s); at least 2 needed", id="one-choice"),
    pytest.param({**GOOD, "choices": ["yes", "no", "yes"]}, "the answer appears 2 times among the choices",
                 id="answer-repeated"),
    pytest.param({**GOOD, "choices": ["yes", " yes "]},
                 "fewer than 2 distinct choices; the answer appears 2 times among the choices",
                 id="duplicate-after-strip"),
    pytest.param({k: v for k, v in GOOD.items() if k != "id"}, "missing 'id'", id="missing-id"),
    pytest.param({**GOOD, "question": "   "}, "empty 'question'", id="empty-question"),
    pytest.param({**GOOD, "choices": "yes, no"}, "'choices' is not a list of strings", id="choices-a-string"),
    pytest.param({**GOOD, "choices": [1, 2]}, "'choices' is not a list of strings", id="choices-not-strings"),
    pytest.param({k: v for k, v in GOOD.items() if k != "choices"}, "'choices' is not a list of strings",
                 id="no-choices"),
    pytest.param(["Is water wet?", ["yes", "no"], "yes"], "a list, not a record", id="record-a-list"),
    pytest.param("Is water wet?", "a str, not a record", id="record-a-string"),
]


@pytest.mark.parametrize("record, reason", MALFORMED)
def test_malformed_record_rejected_with_reason(record, reason):
    with pytest.raises(RowError) as err:
        to_question(record)
    assert str(err.value) == reason


def test_repeated_wrong_option_is_kept():
    # The authors' OBQA train has a few: harmless, since the answer is still one letter.
    assert to_question({**GOOD, "choices": ["yes", "no", "no "]}).choices == ("yes", "no", "no")


def test_malformed_rows_in_a_file_keep_their_place(tmp_path, per_file_2):
    records = [GOOD, *(p.values[0] for p in MALFORMED), {**GOOD, "id": "g-2"}]
    d = make_dataset(tmp_path, questions={"train": records}, formats={"train": "json"}, cot_splits=())
    rows = read_official(d).rows["train"]
    assert len(rows) == len(records)
    assert rows[0] == Row("toy_train.json:item 0", q(GOOD))
    assert rows[-1] == Row(f"toy_train.json:item {len(records) - 1}", q({**GOOD, "id": "g-2"}))
    assert [(r.question, r.reason) for r in rows[1:-1]] == [(None, p.values[1]) for p in MALFORMED]


# -- one rationale string --------------------------------------------------------------------------------------

def row_of(record: dict) -> Row:
    return Row("toy_train.json:line 1", q(record))


SUN = TOY["train"][0]


def test_split_normal_string():
    text = cot(SUN, flan="Sun is responsible for plants sprouting, blooming and wilting.",
               llama="If the sun is not there, the plants will not sprout.\nSo the answer is (d).")
    assert split_rationale(text, row_of(SUN)) == (
        ("Sun is responsible for plants sprouting, blooming and wilting.", ""),
        ("If the sun is not there, the plants will not sprout.\nSo the answer is (d).", ""),
    )


def test_split_llama_lead_without_newline_and_repeated_marker_text():
    # The authors' strings sometimes run the rationale straight on after the lead.
    text = cot(SUN, llama=None) + " llama rationale: Let's think step by step.(a) puppies: no."
    assert split_rationale(text, row_of(SUN))[1] == ("(a) puppies: no.", "")


def test_split_without_llama_part():
    text = cot(SUN, flan="Plants need the sun.", llama=None)
    assert split_rationale(text, row_of(SUN)) == (("Plants need the sun.", ""), ("", "missing"))


def test_split_with_empty_llama_part():
    text = cot(SUN, flan="Plants need the sun.", llama=None) + " llama rationale: Let's think step by step.  "
    assert split_rationale(text, row_of(SUN)) == (("Plants need the sun.", ""), ("", "empty"))


def test_split_truncated_without_thus():
    text = "Plants need the sun to sprout and bloom.\n\nQ: The sun is respon"
    assert split_rationale(text, row_of(SUN)) == (("Plants need the sun to sprout and bloom.", ""), ("", "missing"))
    # Cut inside the FLAN rationale itself: all of it is the rationale.
    assert split_rationale("Plants need the su", row_of(SUN)) == (("Plants need the su", ""), ("", "missing"))


def test_split_empty_flan():
    text = cot(SUN, flan="")
    flan, llama = split_rationale(text, row_of(SUN))
    assert flan == ("", "empty")
    assert llama == (f"The llama thinks about {SUN['id']}.\nSo the answer is (d).", "")


def test_split_echo_compared_loosely():
    # Case and runs of spaces do not matter (piqa questions and choices hold double spaces).
    text = cot({**SUN, "question": "THE  sun   is responsible\tfor"}, flan="Sunlight.")
    assert split_rationale(text, row_of(SUN)) == (("Sunlight.", ""), (f"The llama thinks about {SUN['id']}.\n"
                                                                      "So the answer is (d).", ""))


def test_split_echoed_question_does_not_match():
    other = TOY["train"][4]  # the rationale of another question: the files are out of step
    both = ("", "echoed question does not match")
    assert split_rationale(cot(other), row_of(SUN)) == (both, both)
    truncated = "Mount Rushmore is far away.\n\nQ: When standing mi"
    assert split_rationale(truncated, row_of(SUN)) == (both, both)


def test_split_rejected_question():
    rejected = Row("toy_train.json:line 3", None, "missing 'id'")
    both = ("", "question rejected")
    assert split_rationale(cot(SUN), rejected) == (both, both)


# -- rationale files aligned with questions --------------------------------------------------------------------

def test_rationales_aligned_across_files(tmp_path, per_file_2):
    d = make_dataset(tmp_path)
    assert sorted(p.name for p in (d / "llm").iterdir()) == [
        "test_CoT_0.json", "train_CoT_0.json", "train_CoT_1.json", "train_CoT_2.json",
        "valid_CoT_0.json"]
    found = read_official(d)
    assert set(found.rationales) == {FLAN, LLAMA}
    for split, rows in found.rows.items():
        flan, llama = found.rationales[FLAN][split], found.rationales[LLAMA][split]
        assert len(flan) == len(llama) == len(rows)
        for row, f, ll in zip(rows, flan, llama):
            letter = row.question.answer_letter
            assert f == (f"Reasoning for {row.question.id} goes here.", "")
            assert ll == (f"The llama thinks about {row.question.id}.\nSo the answer is ({letter}).", "")
    assert found.files == [str(d / f"toy_{s}.json") for s in ("train", "valid", "test")] + [
        str(d / "llm" / f) for f in ("train_CoT_0.json", "train_CoT_1.json", "train_CoT_2.json",
                                     "valid_CoT_0.json", "test_CoT_0.json")]


def test_rationale_files_in_numeric_k_order(tmp_path, monkeypatch):
    monkeypatch.setattr(official, "PER_FILE", 1)
    records = [{"id": f"n-{i}", "question": f"Question number {i} of twelve?", "choices": ["yes", "no"],
                "answer": "yes"} for i in range(12)]  # files k = 0..11: "10" sorts before "2" as text
    d = make_dataset(tmp_path, questions={"train": records}, per_file=1)
    found = read_official(d)
    assert [f for f, _ in found.rationales[FLAN]["train"]] == [f"Reasoning for n-{i} goes here." for i in range(12)]
    assert found.files[1:] == [str(d / "llm" / f"train_CoT_{k}.json") for k in range(12)]


def test_rejected_row_keeps_its_rationale_slot(tmp_path, per_file_2):
    records = [dict(r) for r in TOY["train"]]
    texts = [cot(r) for r in records]
    records[2]["answer"] = "perhaps"  # rejected in the middle: later rationales must not shift
    d = make_dataset(tmp_path, questions={"train": records}, cot_splits=())
    write_cot(d / "llm", "train", texts, 2)
    found = read_official(d)
    assert found.rows["train"][2].reason == "answer 'perhaps' is not among the choices"
    flan = found.rationales[FLAN]["train"]
    assert flan[2] == ("", "question rejected")
    assert [f for i, (f, _) in enumerate(flan) if i != 2] == [
        f"Reasoning for {r['id']} goes here." for i, r in enumerate(records) if i != 2]


def test_split_without_rationale_files_has_none(tmp_path, per_file_2):
    d = make_dataset(tmp_path, cot_splits=("train",))
    found = read_official(d)
    assert set(found.rationales[FLAN]) == set(found.rationales[LLAMA]) == {"train"}
    assert not any("valid_CoT" in f or "test_CoT" in f for f in found.files)


def test_no_llm_dir_means_no_rationales(tmp_path):
    found = read_official(make_dataset(tmp_path, cot_splits=()))
    assert found.rationales == {FLAN: {}, LLAMA: {}}
    assert len(found.rows["train"]) == 5


# -- errors ----------------------------------------------------------------------------------------------------

def with_train_cot(tmp_path: Path, texts: list, per_file: int = 2) -> Path:
    d = make_dataset(tmp_path, cot_splits=())
    write_cot(d / "llm", "train", texts, per_file)
    return d


def all_train_texts() -> list[str]:
    return [cot(r) for r in TOY["train"]]


def test_fewer_rationales_than_questions(tmp_path, per_file_2):
    d = with_train_cot(tmp_path, all_train_texts()[:4])
    with pytest.raises(DataError) as err:
        read_official(d)
    msg = str(err.value)
    assert str(d / "llm") in msg
    assert "4 rationales" in msg and "5 questions" in msg
    assert "train_CoT_1.json ends early" in msg


def test_more_rationales_than_questions(tmp_path, per_file_2):
    d = with_train_cot(tmp_path, all_train_texts() + [cot(TOY["valid"][0])])
    with pytest.raises(DataError, match=r"6 rationales .* for 5 questions.*train_CoT_2\.json has extra items"):
        read_official(d)


def test_non_last_file_with_wrong_count(tmp_path, per_file_2):
    d = make_dataset(tmp_path, cot_splits=())
    llm = d / "llm"
    llm.mkdir()
    texts = all_train_texts()
    (llm / "train_CoT_0.json").write_text(json.dumps(texts[:3]))  # 3, not PER_FILE = 2
    (llm / "train_CoT_1.json").write_text(json.dumps(texts[3:]))
    with pytest.raises(DataError) as err:
        read_official(d)
    assert str(err.value) == f"{llm / 'train_CoT_0.json'}: 3 rationales; every file holds 2, the last one at most"


def test_last_file_with_too_many_and_duplicate_k(tmp_path, per_file_2):
    d = make_dataset(tmp_path, cot_splits=())
    llm = d / "llm"
    llm.mkdir()
    texts = all_train_texts()
    (llm / "train_CoT_0.json").write_text(json.dumps(texts[:2]))
    (llm / "train_CoT_1.json").write_text(json.dumps(texts[2:]))  # 3 > PER_FILE in the last file
    with pytest.raises(DataError, match="train_CoT_1.json: 3 rationales"):
        read_official(d)
    (llm / "train_CoT_01.json").write_text(json.dumps(texts[2:4]))
    with pytest.raises(DataError, match="are both file k = 1"):
        read_official(d)


def test_hub_schema_file_with_official_name_is_not_official(tmp_path):
    (tmp_path / "obqa_train.json").write_text(json.dumps(
        {"id": "1", "question_stem": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}))
    assert not looks_official(tmp_path)


def test_gap_in_k_numbering(tmp_path, per_file_2):
    d = with_train_cot(tmp_path, all_train_texts())
    (d / "llm" / "train_CoT_1.json").rename(d / "llm" / "train_CoT_3.json")
    with pytest.raises(DataError) as err:
        read_official(d)
    assert str(err.value) == f"{d / 'llm'}: train_CoT files are missing k = [1]"


def test_files_not_named_cot_k_are_ignored(tmp_path, per_file_2):
    d = with_train_cot(tmp_path, all_train_texts())
    (d / "llm" / "train_CoT_x.json").write_text("not json")
    (d / "llm" / "train_CoT_0.json.bak").write_text("not json")
    assert len(read_official(d).rationales[FLAN]["train"]) == 5


def test_truncated_rationale_json_names_file_and_line(tmp_path, per_file_2):
    d = with_train_cot(tmp_path, all_train_texts())
    f = d / "llm" / "train_CoT_1.json"
    f.write_text('[\n    "First rationale. Thus, the answer is (a) yes",\n    "Second rationale, cut')
    with pytest.raises(DataError) as err:
        read_official(d)
    assert str(err.value).startswith(f"{f}: invalid or truncated JSON at line 3, column 5")


def test_truncated_question_json_names_file_and_line(tmp_path, per_file_2):
    d = make_dataset(tmp_path, formats={"valid": "json"})
    f = d / "toy_valid.json"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:12]))
    with pytest.raises(DataError, match=rf"^{re.escape(str(f))}: invalid or truncated JSON at line 12,"):
        read_official(d)


def test_bad_json_line_in_question_file(tmp_path):
    d = make_dataset(tmp_path, cot_splits=())
    f = d / "toy_train.json"
    f.write_text(f.read_text().replace('"yn-1"', "yn-1"))
    with pytest.raises(DataError, match=rf"^{re.escape(str(f))}: line 2 is not valid JSON"):
        read_official(d)


@pytest.mark.parametrize("items, problem", [
    (["Fine. Thus, the answer is (a) yes", 3], "item 1 is a int, not a string"),
    (["Fine.", None], "item 1 is a NoneType, not a string"),
    ([["nested"], "Fine."], "item 0 is a list, not a string"),
])
def test_non_string_rationale_item(tmp_path, per_file_2, items, problem):
    d = with_train_cot(tmp_path, all_train_texts())
    f = d / "llm" / "train_CoT_0.json"
    f.write_text(json.dumps(items))
    with pytest.raises(DataError) as err:
        read_official(d)
    assert str(err.value) == f"{f}: {problem}"


def test_rationale_file_not_an_array(tmp_path, per_file_2):
    d = with_train_cot(tmp_path, all_train_texts())
    f = d / "llm" / "train_CoT_2.json"
    f.write_text(json.dumps({"0": "Fine."}))
    with pytest.raises(DataError, match=rf"^{re.escape(str(f))}: expected a JSON array of strings, got dict"):
        read_official(d)


def test_non_utf8_question_file(tmp_path):
    d = make_dataset(tmp_path, cot_splits=())
    f = d / "toy_test.json"
    raw = f.read_bytes()
    at = raw.index(b"ice colder")
    f.write_bytes(raw[:at] + b"\xe9" + raw[at + 1:])  # Latin-1 é
    with pytest.raises(DataError) as err:
        read_official(d)
    assert str(err.value) == f"{f}: not valid UTF-8 at byte {at}"


def test_non_utf8_rationale_file(tmp_path, per_file_2):
    d = with_train_cot(tmp_path, all_train_texts())
    f = d / "llm" / "train_CoT_0.json"
    f.write_bytes(b'["caf\xe9"]')
    with pytest.raises(DataError, match=rf"^{re.escape(str(f))}: not valid UTF-8 at byte 5$"):
        read_official(d)


def test_no_question_files(tmp_path):
    (tmp_path / "empty" / "llm").mkdir(parents=True)
    (tmp_path / "empty" / "llm" / "train_CoT_0.json").write_text("[]")
    (tmp_path / "empty" / "train.json").write_text("[]")
    with pytest.raises(DataError, match="no question files"):
        read_official(tmp_path / "empty")


def test_not_a_directory(tmp_path):
    f = make_dataset(tmp_path) / "toy_train.json"
    with pytest.raises(DataError, match="data.path: .* is not a directory"):
        read_official(f)


def test_several_question_files_for_a_split(tmp_path):
    d = make_dataset(tmp_path, cot_splits=())
    write_questions(d / "other_train.json", TOY["train"], "json")
    with pytest.raises(DataError, match="several train question files: other_train.json, toy_train.json"):
        read_official(d)


# -- looks_official --------------------------------------------------------------------------------------------

def test_looks_official(tmp_path):
    assert looks_official(make_dataset(tmp_path))
    only_test = tmp_path / "only_test"
    write_questions(only_test / "toy_test.json", TOY["test"], "json")
    assert looks_official(only_test)


@pytest.mark.parametrize("files", [(), ("train.json",), ("toy_train.jsonl",), ("toy-train.json",),
                                   ("llm/train_CoT_0.json",)])
def test_does_not_look_official(tmp_path, files):
    d = tmp_path / "d"
    d.mkdir()
    for name in files:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text("[]")
    assert not looks_official(d)


def test_file_or_missing_path_does_not_look_official(tmp_path):
    f = make_dataset(tmp_path) / "toy_train.json"
    assert not looks_official(f)
    assert not looks_official(tmp_path / "nowhere")
