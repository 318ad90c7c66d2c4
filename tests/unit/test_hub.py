"""Hub dataset readers (``data/hub.py``): each schema on hand-written records (good and malformed), the open-answer
ones (GSM8K, SVAMP) in their published layouts, and loading by hub name (``datasets.load_dataset`` replaced,
nothing downloaded)."""

from __future__ import annotations

import pytest

from tests.data_files import by_where, gsm8k, labeled, write
from tinyllm_ray.data.hub import HUB_SCHEMAS, derived_id, read_hub
from tinyllm_ray.data.records import NO_LABEL, DataError, Row
from tinyllm_ray.data.schema import Question

SOLUTION = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
            "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
RATIONALE = ("Natalia sold 48/2 = 24 clips in May.\n"
             "Natalia sold 48+24 = 72 clips altogether in April and May.")


# -- the registry ----------------------------------------------------------------------------------------------

def test_registry_names_hub_ids_and_configs():
    assert {name: (s.hub_id, s.hub_config) for name, s in HUB_SCHEMAS.items()} == {
        "obqa": ("allenai/openbookqa", "main"),
        "arc_easy": ("allenai/ai2_arc", "ARC-Easy"),
        "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"),
        "commonsenseqa": ("tau/commonsense_qa", None),
        "riddlesense": ("INK-USC/riddle_sense", None),
        "piqa": ("ybisk/piqa", None),
        "pubmedqa": ("qiaojin/PubMedQA", "pqa_labeled"),
        "bioasq": (None, None),
        "gsm8k": ("openai/gsm8k", "main"),
        "svamp": ("ChilleD/SVAMP", None),
    }
    assert all(name == schema.name for name, schema in HUB_SCHEMAS.items())
    # Script-only main branches: ``datasets`` >= 4 loads only their auto-converted Parquet branch.
    assert {name for name, s in HUB_SCHEMAS.items() if s.hub_revision == "refs/convert/parquet"} == {
        "piqa", "riddlesense"}
    assert all(s.hub_revision in (None, "refs/convert/parquet") for s in HUB_SCHEMAS.values())


def test_unknown_dataset_name():
    with pytest.raises(DataError, match=r"unknown hub dataset 'nope' \(known: arc_challenge, arc_easy, bioasq"):
        read_hub("nope", None)


def test_derived_id_is_sanitized():
    assert derived_id("piqa", "train.jsonl:line 3") == "piqa-train.jsonl-line-3"
    assert derived_id("piqa", "ybisk/piqa:validation:row 7") == "piqa-ybisk-piqa-validation-row-7"
    assert derived_id("", "data.json:item 0") == "data.json-item-0"


# -- one test per schema ---------------------------------------------------------------------------------------

def test_obqa_jsonl_good_and_malformed_rows(tmp_path):
    good = {"id": "7-980", "question_stem": "The sun is responsible for",
            "choices": labeled(["puppies learning new tricks", "plants sprouting, blooming and wilting",
                                "children growing up", "flowers wilting in a vase"], ["A", "B", "C", "D"]),
            "answerKey": "B"}
    write(tmp_path / "train.jsonl", [
        good,
        {**good, "id": "no-key", "answerKey": None},
        {k: v for k, v in good.items() if k != "answerKey"},
        {**good, "answerKey": "E"},
        {**good, "choices": labeled(["only one"], ["A"]), "answerKey": "A"},
        {**good, "choices": ["puppies", "plants"]},
        {**good, "choices": labeled(["a", "b"], ["A"])},
        {k: v for k, v in good.items() if k != "id"},
        ["not", "an", "object"],
    ])
    rows = read_hub("obqa", tmp_path)
    assert list(rows) == ["train"]
    assert by_where(rows["train"]) == {
        "train.jsonl:line 1": Question(id="7-980", question="The sun is responsible for",
                                       choices=tuple(good["choices"]["text"]),
                                       answer="plants sprouting, blooming and wilting"),
        "train.jsonl:line 2": "no answer label",
        "train.jsonl:line 3": "missing 'answerKey'",
        "train.jsonl:line 4": "answer key 'E' is not among the labels A, B, C, D",
        "train.jsonl:line 5": "1 choice(s); at least 2 needed",
        "train.jsonl:line 6": "'choices' is a list, not a dict of 'text' and 'label' lists",
        "train.jsonl:line 7": "'choices' has 2 texts but 1 labels",
        "train.jsonl:line 8": "missing 'id'",
        "train.jsonl:line 9": "record is a list, not an object",
    }


def test_arc_json_array_with_numeric_labels(tmp_path):
    write(tmp_path / "ARC-Challenge-Dev.json", [
        {"id": "Mercury_7175875", "question": "An astronomer observes that a planet rotates faster...",
         "choices": labeled(["Planetary density will decrease.", "Planetary years will become longer.",
                             "Planetary days will become shorter.", "Planetary gravity will become stronger."],
                            ["1", "2", "3", "4"]),
         "answerKey": "3"},
        {"id": "dup", "question": "Which is duplicated?", "choices": labeled(["same", "same"], ["A", "B"]),
         "answerKey": "A"},
        {"id": "num", "question": 42, "choices": labeled(["x", 3], ["A", "B"]), "answerKey": "B"},
        {"id": "bad", "question": {"text": "q"}, "choices": labeled(["x", "y"], ["A", "B"]), "answerKey": "A"},
    ])
    rows = read_hub("arc_challenge", tmp_path)
    assert list(rows) == ["valid"]
    assert by_where(rows["valid"]) == {
        "ARC-Challenge-Dev.json:item 0": Question(
            id="Mercury_7175875", question="An astronomer observes that a planet rotates faster...",
            choices=("Planetary density will decrease.", "Planetary years will become longer.",
                     "Planetary days will become shorter.", "Planetary gravity will become stronger."),
            answer="Planetary days will become shorter."),
        "ARC-Challenge-Dev.json:item 1": "fewer than 2 distinct choices; the answer appears 2 times among the choices",
        "ARC-Challenge-Dev.json:item 2": Question(id="num", question="42", choices=("x", "3"), answer="3"),
        "ARC-Challenge-Dev.json:item 3": "'question' is a dict, not text",
    }


def test_commonsenseqa_unlabeled_test_split(tmp_path):
    choices = labeled(["ignore", "enforce", "authoritarian", "yell at", "avoid"], ["A", "B", "C", "D", "E"])
    write(tmp_path / "csqa-train.jsonl", [
        {"id": "075e483d21c29a511267ef62bedc0461", "question": "The sanctions against the school were a punishing "
         "blow, and they seemed to what the efforts the school had made to change?", "question_concept": "punishing",
         "choices": choices, "answerKey": "A"}])
    write(tmp_path / "csqa-test.jsonl", [
        {"id": "90b30172e645ff91f7171a048582eb8b", "question": "The townhouse was a hard sell for the realtor?",
         "question_concept": "townhouse", "choices": choices, "answerKey": ""}])
    rows = read_hub("commonsenseqa", tmp_path)
    assert sorted(rows) == ["test", "train"]
    assert rows["train"][0].question.answer == "ignore"
    assert rows["train"][0].question.id == "075e483d21c29a511267ef62bedc0461"
    assert rows["test"] == [Row("csqa-test.jsonl:line 1", None, "no answer label")]


def test_riddlesense_derives_ids_per_split(tmp_path):
    riddle = {"question": "My life can be measured in hours. I serve by being devoured. What am I?",
              "choices": labeled(["paper", "candle", "lamp", "clock", "fire"], ["A", "B", "C", "D", "E"]),
              "answerKey": "B"}
    write(tmp_path / "rs_train.jsonl", [riddle, riddle])
    write(tmp_path / "rs_dev.jsonl", [riddle])
    rows = read_hub("riddlesense", tmp_path)
    ids = [row.question.id for split in ("train", "valid") for row in rows[split]]
    assert ids == ["riddlesense-rs_train.jsonl-line-1", "riddlesense-rs_train.jsonl-line-2",
                   "riddlesense-rs_dev.jsonl-line-1"]
    assert rows["valid"][0].question.answer == "candle"


def test_piqa_parquet_labels(tmp_path):
    base = {"goal": "To separate egg whites from the yolk using a water bottle, you should",
            "sol1": "Squeeze the bottle against the yolk, then release to suck it up.",
            "sol2": "Place the bottle against the yolk and keep pushing."}
    write(tmp_path / "data" / "validation-00000-of-00001.parquet",
          [{**base, "label": 0}, {**base, "label": 1}, {**base, "label": -1}, {**base, "label": 2}])
    write(tmp_path / "data" / "train-00000-of-00001.parquet", [{**base, "sol2": "", "label": 1}])
    rows = read_hub("piqa", tmp_path)
    assert sorted(rows) == ["train", "valid"]
    assert by_where(rows["valid"]) == {
        "validation-00000-of-00001.parquet:row 0": Question(
            id="piqa-validation-00000-of-00001.parquet-row-0", question=base["goal"],
            choices=(base["sol1"], base["sol2"]), answer=base["sol1"]),
        "validation-00000-of-00001.parquet:row 1": Question(
            id="piqa-validation-00000-of-00001.parquet-row-1", question=base["goal"],
            choices=(base["sol1"], base["sol2"]), answer=base["sol2"]),
        "validation-00000-of-00001.parquet:row 2": "no answer label",
        "validation-00000-of-00001.parquet:row 3": "'label' is 2, not 0 or 1",
    }
    assert by_where(rows["train"]) == {"train-00000-of-00001.parquet:row 0": "empty 'sol2'"}


def test_pubmedqa_hub_export_layout(tmp_path):
    record = {"pubid": 21645374, "question": "Do mitochondria play a role in remodelling lace plant leaves?",
              "context": {"contexts": ["Programmed cell death (PCD) is the regulated death of cells.",
                                       "The lace plant produces perforations in its leaves through PCD."],
                          "labels": ["BACKGROUND", "RESULTS"], "meshes": ["Alismataceae", "Apoptosis"]},
              "long_answer": "Results depicted mitochondrial dynamics in vivo as PCD progresses.",
              "final_decision": "yes"}
    write(tmp_path / "pqa_labeled" / "train-00000-of-00001.parquet", [
        record,
        {**record, "pubid": 1, "final_decision": "perhaps"},
        {**record, "pubid": 2, "final_decision": "Maybe"},
        {**record, "pubid": 3, "context": {"labels": ["X"], "meshes": []}},
    ])
    rows = read_hub("pubmedqa", tmp_path)
    assert list(rows) == ["train"]
    assert by_where(rows["train"]) == {
        "train-00000-of-00001.parquet:row 0": Question(
            id="21645374", question=record["question"], choices=("yes", "no", "maybe"), answer="yes",
            context="Programmed cell death (PCD) is the regulated death of cells. "
                    "The lace plant produces perforations in its leaves through PCD.",
            reference_rationale=record["long_answer"]),
        "train-00000-of-00001.parquet:row 1": "'final_decision' is 'perhaps', not yes, no or maybe",
        "train-00000-of-00001.parquet:row 2": Question(
            id="2", question=record["question"], choices=("yes", "no", "maybe"), answer="maybe",
            context=rows["train"][0].question.context, reference_rationale=record["long_answer"]),
        "train-00000-of-00001.parquet:row 3": "missing 'context.contexts'",
    }


def test_bioasq_variants(tmp_path):
    write(tmp_path / "bioasq_test.json", [
        {"id": "55031181e9bde69634000014", "type": "yesno", "body": "Is Hirschsprung disease a mendelian disorder?",
         "exact_answer": "Yes", "ideal_answer": ["It is multifactorial, not purely mendelian."],
         "snippets": [{"text": "Hirschsprung disease is a complex disorder.", "document": "x"},
                      {"text": "Coding mutations in RET explain half of cases."}]},
        {"question": "Is the protein Papilin secreted?", "answer": "no", "context": ["Papilin is.", "Secreted."]},
        {"id": "f1", "type": "factoid", "body": "Which gene?", "exact_answer": ["RET"]},
        {"id": "m", "body": "Is it?", "exact_answer": "maybe"},
        {"id": "s", "body": "Is it?", "exact_answer": ["no"], "snippets": {"text": "not a list"}},
        {"id": "q", "exact_answer": "no"},
    ])
    rows = read_hub("bioasq", tmp_path)
    assert by_where(rows["test"]) == {
        "bioasq_test.json:item 0": Question(
            id="55031181e9bde69634000014", question="Is Hirschsprung disease a mendelian disorder?",
            choices=("yes", "no"), answer="yes",
            context="Hirschsprung disease is a complex disorder. Coding mutations in RET explain half of cases.",
            reference_rationale="It is multifactorial, not purely mendelian."),
        "bioasq_test.json:item 1": Question(id="bioasq-bioasq_test.json-item-1",
                                            question="Is the protein Papilin secreted?", choices=("yes", "no"),
                                            answer="no", context="Papilin is. Secreted."),
        "bioasq_test.json:item 2": "type 'factoid' is not a yes/no question",
        "bioasq_test.json:item 3": "'exact_answer' is 'maybe', not yes or no",
        "bioasq_test.json:item 4": "'snippets' is a dict, not a list",
        "bioasq_test.json:item 5": "missing 'body' or 'question'",
    }


# -- loading by hub name ---------------------------------------------------------------------------------------

@pytest.fixture
def fake_hub(monkeypatch):
    """Replace ``datasets.load_dataset`` with one that records its call and returns in-memory splits."""
    import datasets

    calls: list[tuple[tuple, dict]] = []
    splits: dict[str, list[dict]] = {}

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls, splits


def test_read_hub_by_name_uses_load_dataset(fake_hub):
    calls, splits = fake_hub
    row = {"id": "8-343", "question_stem": "A person wants to start saving money so that they can afford a nice "
           "vacation at the end of the year. After looking over their budget and expenses, they decide the best "
           "way to save money is to", "choices": labeled(["make more phone calls", "quit eating lunch out",
                                                          "buy less with monopoly money", "have lunch with friends"],
                                                         ["A", "B", "C", "D"]), "answerKey": "B"}
    splits.update(train=[row, {**row, "id": "x", "answerKey": "Z"}], validation=[row], test=[row])
    rows = read_hub("obqa", None)
    assert calls == [(("allenai/openbookqa", "main"), {})]
    assert sorted(rows) == ["test", "train", "valid"]
    assert [r.where for r in rows["train"]] == ["allenai/openbookqa:train:row 0", "allenai/openbookqa:train:row 1"]
    assert rows["train"][0].question == Question(id="8-343", question=row["question_stem"],
                                                 choices=tuple(row["choices"]["text"]), answer="quit eating lunch out")
    assert rows["train"][1] == Row("allenai/openbookqa:train:row 1", None,
                                   "answer key 'Z' is not among the labels A, B, C, D")
    assert rows["valid"][0].where == "allenai/openbookqa:validation:row 0"


def test_read_hub_piqa_by_name_loads_the_parquet_revision(fake_hub):
    calls, splits = fake_hub
    splits.update(train=[{"goal": "g", "sol1": "a", "sol2": "b", "label": 1}],
                  test=[{"goal": "g", "sol1": "a", "sol2": "b", "label": -1}])
    rows = read_hub("piqa", None)
    assert calls == [(("ybisk/piqa", None), {"revision": "refs/convert/parquet"})]
    assert rows["train"][0].question.id == "piqa-ybisk-piqa-train-row-0"
    assert rows["train"][0].question.answer == "b"
    assert rows["test"] == [Row("ybisk/piqa:test:row 0", None, "no answer label")]


def test_a_given_revision_is_loaded_and_recorded(fake_hub):
    calls, splits = fake_hub
    splits.update(train=[{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}])
    served: list[str] = []
    read_hub("piqa", None, revision="0123abcd" * 5, served=served)
    assert calls == [(("ybisk/piqa", None), {"revision": "0123abcd" * 5})]
    assert served == ["hf://datasets/ybisk/piqa@" + "0123abcd" * 5]


def test_a_followed_branch_is_loaded_at_the_commit_it_serves_and_says_how_to_pin_it(fake_hub, monkeypatch, caplog):
    import huggingface_hub

    calls, splits = fake_hub
    splits.update(train=[{"goal": "g", "sol1": "a", "sol2": "b", "label": 0}])
    asked: list[tuple] = []

    def dataset_info(self, repo_id, revision=None):
        asked.append((repo_id, revision))
        return type("Info", (), {"sha": "f" * 40})()

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    served: list[str] = []
    read_hub("piqa", None, served=served)
    assert asked == [("ybisk/piqa", "refs/convert/parquet")]
    assert calls == [(("ybisk/piqa", None), {"revision": "f" * 40})]  # the same commit, whatever comes after
    assert served == ["hf://datasets/ybisk/piqa@" + "f" * 40]
    assert f"--set data.revision={'f' * 40} pins it" in caplog.text


def test_read_hub_load_failure_is_a_data_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"pubmedqa: cannot load 'qiaojin/PubMedQA' \(config 'pqa_labeled'\) from "
                                        r"the hub: ConnectionError: offline; pass a local path"):
        read_hub("pubmedqa", None)


def test_bioasq_by_hub_name_needs_a_path(fake_hub):
    calls, _ = fake_hub
    with pytest.raises(DataError, match="bioasq: there is no canonical hub copy.*pass a local path"):
        read_hub("bioasq", None)
    assert calls == []


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


def test_gsm8k_by_hub_name_loads_the_main_config(fake_hub):
    calls, splits = fake_hub
    splits.update(train=[gsm8k("Q?", SOLUTION), gsm8k("R?", "none")], test=[gsm8k("T?", "#### 0")])
    rows = read_hub("gsm8k", None)
    assert calls == [(("openai/gsm8k", "main"), {})]
    assert rows["train"][0].question.id == "gsm8k-openai-gsm8k-train-row-0"
    assert rows["train"][0].question.answer == "72"
    assert rows["train"][1] == Row("openai/gsm8k:train:row 1", None, "no '####' answer line")
    assert rows["test"][0].question.answer == "0"


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
