"""Open-answer data (``data.task: open``): the GSM8K and SVAMP hub readers on local files in their published
layouts, the column-mapped reader without ``choices``, and the built-in dataset's open variant. No Ray, no
network: every file is written here."""

from __future__ import annotations

import pytest

from tinyllm_ray.config import DataConfig
from tinyllm_ray.data import synthetic
from tinyllm_ray.data.hub import plain_number, read_hub, read_mapped
from tinyllm_ray.data.load import load_data
from tinyllm_ray.data.records import NO_LABEL, Row
from tinyllm_ray.data.schema import Question, problems

from .test_hub import by_where, fake_hub, write  # noqa: F401 -- fake_hub: a fixture

SOLUTION = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
            "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
RATIONALE = ("Natalia sold 48/2 = 24 clips in May.\n"
             "Natalia sold 48+24 = 72 clips altogether in April and May.")


def gsm8k(question: str, answer: str) -> dict:
    return {"question": question, "answer": answer}


# -- GSM8K -----------------------------------------------------------------------------------------------------

def test_gsm8k_jsonl_final_answer_rationale_and_rejects(tmp_path):
    write(tmp_path / "train.jsonl", [
        gsm8k("How many clips did Natalia sell?", SOLUTION),
        gsm8k("How many in all?", "3 boxes of 411 = <<3*411=1233>>1233, plus 1.\n#### 1,234"),
        gsm8k("How far below zero?", "It fell by 5.\n#### -5"),
        gsm8k("What is the price?", "Half of 5 is 2.5.\n#### 2.5"),
        gsm8k("No final line?", "It is 4."),
        gsm8k("Words?", "Count them.\n#### five"),
        gsm8k("Odd separators?", "Add.\n#### 3,4"),
        {"question": "No solution?"},
    ])
    write(tmp_path / "test.jsonl", [gsm8k("Test?", "1 + 1 = <<1+1=2>>2\n#### 2")])
    rows = read_hub("gsm8k", tmp_path)
    assert sorted(rows) == ["test", "train"]
    got = by_where(rows["train"])
    assert got["train.jsonl:line 1"] == Question(id="gsm8k-train.jsonl-line-1",
                                                 question="How many clips did Natalia sell?", choices=(),
                                                 answer="72", reference_rationale=RATIONALE)
    assert [got[f"train.jsonl:line {n}"].answer for n in (2, 3, 4)] == ["1234", "-5", "2.5"]
    assert got["train.jsonl:line 2"].reference_rationale == "3 boxes of 411 = 1233, plus 1."
    assert [got[f"train.jsonl:line {n}"] for n in (5, 6, 7, 8)] == [
        "no '####' answer line",
        "the '####' answer 'five' is not a number",
        "the '####' answer '3,4' is not a number",
        "missing 'answer'",
    ]
    assert rows["test"] == [Row("test.jsonl:line 1", Question(id="gsm8k-test.jsonl-line-1", question="Test?",
                                                              choices=(), answer="2", reference_rationale="1 + 1 = 2"))]


def test_gsm8k_hub_snapshot_layout_reads_the_main_config(tmp_path):
    """The hub repo keeps each config in its folder: ``main/train-00000-of-00001.parquet``; ``socratic/`` beside it
    is another config of the same questions and must not be read."""
    (tmp_path / "README.md").write_text("---\n---\n", encoding="utf-8")
    write(tmp_path / "main" / "train-00000-of-00001.parquet",
          [gsm8k("Main question?", SOLUTION), gsm8k("Broken?", "no mark here")])
    write(tmp_path / "main" / "test-00000-of-00001.parquet", [gsm8k("Main test?", "So.\n#### 10,000")])
    write(tmp_path / "socratic" / "train-00000-of-00001.parquet", [gsm8k("Socratic?", "Q? A.\n#### 1")])
    rows = read_hub("gsm8k", tmp_path)
    assert sorted(rows) == ["test", "train"]
    assert rows["train"][0] == Row("train-00000-of-00001.parquet:row 0", Question(
        id="gsm8k-train-00000-of-00001.parquet-row-0", question="Main question?", choices=(), answer="72",
        reference_rationale=RATIONALE))
    assert rows["train"][1] == Row("train-00000-of-00001.parquet:row 1", None, "no '####' answer line")
    assert [r.question.answer for r in rows["test"]] == ["10000"]
    # the config folder itself as data.path works too
    assert read_hub("gsm8k", tmp_path / "main")["test"] == rows["test"]


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


def test_gsm8k_by_hub_name_loads_the_main_config(fake_hub):
    calls, splits = fake_hub
    splits.update(train=[gsm8k("Q?", SOLUTION), gsm8k("R?", "none")], test=[gsm8k("T?", "#### 0")])
    rows = read_hub("gsm8k", None)
    assert calls == [(("openai/gsm8k", "main"), {})]
    assert rows["train"][0].question.id == "gsm8k-openai-gsm8k-train-row-0"
    assert rows["train"][0].question.answer == "72"
    assert rows["train"][1] == Row("openai/gsm8k:train:row 1", None, "no '####' answer line")
    assert rows["test"][0].question.answer == "0"


@pytest.mark.parametrize(("text", "number"), [
    ("72", "72"), (" 1,234 ", "1234"), ("-1,234,567.25", "-1234567.25"), ("\u22123", "-3"), ("0.5", "0.5"),
    ("3,4", None), ("1,2345", None), ("$5", None), ("5 apples", None), ("+5", None), ("1e3", None), ("", None),
    ("\u0663", None),  # an Arabic-Indic digit: not an ASCII number
])
def test_plain_number(text, number):
    assert plain_number(text) == number


# -- SVAMP -----------------------------------------------------------------------------------------------------

def svamp(i: str, answer, body: str = "Ann has 3 apples. Ben gives her 2 more.",
          question: str = "How many apples does Ann have now?") -> dict:
    return {"ID": i, "Body": body, "Question": question, "Equation": "( 3.0 + 2.0 )", "Answer": answer,
            "Type": "Addition", "question_concat": f"{body} {question}"}


def test_svamp_parquet_hub_layout_formats_answers_and_joins_the_question(tmp_path):
    write(tmp_path / "data" / "train-00000-of-00001.parquet",
          [svamp("chal-1", 5.0), svamp("chal-2", 2.5), svamp("chal-3", float("nan")), svamp("chal-4", None),
           svamp("chal-5", -12.0)])
    write(tmp_path / "data" / "test-00000-of-00001.parquet", [svamp("chal-9", 1000000.0)])
    rows = read_hub("svamp", tmp_path)
    assert sorted(rows) == ["test", "train"]
    got = by_where(rows["train"])
    assert got["train-00000-of-00001.parquet:row 0"] == Question(
        id="chal-1", question="Ann has 3 apples. Ben gives her 2 more. How many apples does Ann have now?",
        choices=(), answer="5", reference_rationale="( 3.0 + 2.0 ) = 5")
    assert got["train-00000-of-00001.parquet:row 1"].answer == "2.5"
    assert got["train-00000-of-00001.parquet:row 1"].reference_rationale == "( 3.0 + 2.0 ) = 2.5"
    assert got["train-00000-of-00001.parquet:row 2"] == "'Answer' is NaN, not a number"
    assert got["train-00000-of-00001.parquet:row 3"] == NO_LABEL
    assert got["train-00000-of-00001.parquet:row 4"].answer == "-12"
    assert rows["test"][0].question.answer == "1000000"


def test_svamp_jsonl_other_copies_and_bad_answers(tmp_path):
    write(tmp_path / "svamp_train.jsonl", [
        svamp("chal-1", "7.50"),                                     # a copy with string answers
        {"id": "low-1", "body": "Sam has 4 pens.", "question": "How many pens?", "answer": 4},  # lower-case keys
        {"ID": "cat-1", "question_concat": "Tom has 2 cats. How many cats?", "Answer": 2.0},   # only the join
        svamp("bad-1", "many"),
        svamp("bad-2", True),
        svamp("bad-3", [5]),
        {"ID": "bad-4", "Body": "No question here.", "Answer": 1.0},
        {"ID": "bad-5", "Body": "B.", "Question": "Q?"},
    ])
    got = by_where(read_hub("svamp", tmp_path)["train"])
    assert got["svamp_train.jsonl:line 1"].answer == "7.5"
    assert got["svamp_train.jsonl:line 2"] == Question(id="low-1", question="Sam has 4 pens. How many pens?",
                                                       choices=(), answer="4")
    assert got["svamp_train.jsonl:line 3"] == Question(id="cat-1", question="Tom has 2 cats. How many cats?",
                                                       choices=(), answer="2")
    assert [got[f"svamp_train.jsonl:line {n}"] for n in range(4, 9)] == [
        "'Answer' is 'many', not a number",
        "'Answer' is True, not a number",
        "'Answer' is a list, not a number",
        "missing 'Body' and 'Question' (or 'question_concat')",
        "missing 'Answer'",
    ]


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


# -- the built-in dataset --------------------------------------------------------------------------------------

def test_synthetic_open_variant_is_the_choice_one_without_options():
    choice = synthetic.generate(120, 30, 30, seed=5)
    assert synthetic.generate(120, 30, 30, seed=5, task="choice") == choice
    open_ = synthetic.generate(120, 30, 30, seed=5, task="open")
    assert list(open_) == list(choice)
    for split in synthetic.SPLITS:
        assert len(open_[split]) == len(choice[split])
        for o, c in zip(open_[split], choice[split]):
            assert o == Question(id=c.id, question=c.question, choices=(), answer=c.answer,
                                 reference_rationale=c.reference_rationale)
            assert o.is_open and not problems(o)
    families = {synthetic.family_of(q) for q in open_["train"]}
    assert families == set(synthetic.FAMILIES)
    # short answers: a number, a name, a weekday or a dollar amount
    assert all(len(q.answer.split()) == 1 for split in open_.values() for q in split)


def test_synthetic_families_open_variant_and_task_validation():
    choice = synthetic.generate_families(40, ["change", "days"], seed=2)
    open_ = synthetic.generate_families(40, ["change", "days"], seed=2, task="open")
    assert [(q.id, q.question, q.answer) for q in open_] == [(q.id, q.question, q.answer) for q in choice]
    assert all(q.choices == () for q in open_) and all(len(q.choices) >= 2 for q in choice)
    assert {q.answer for q in open_ if synthetic.family_of(q) == "change"} <= {f"${n}" for n in range(1, 50)}
    with pytest.raises(ValueError, match="task must be one of choice, open, got 'opne'"):
        synthetic.generate(1, 1, 1, task="opne")
    with pytest.raises(ValueError, match="task must be one of"):
        synthetic.generate_families(1, ["days"], task="")

