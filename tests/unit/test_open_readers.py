"""Open-answer data (``data.task: open``) end to end: GSM8K files loaded into an open numeric task, and the
built-in dataset's open variant. No Ray, no network: every file is written here. The readers' own cases are in
``test_hub.py`` (GSM8K, SVAMP) and ``test_mapped.py`` (a mapping without ``choices``)."""

from __future__ import annotations

import pytest

from tests.data_files import gsm8k, write
from tinyllm_ray.config import DataConfig
from tinyllm_ray.data import synthetic
from tinyllm_ray.data.load import load_data
from tinyllm_ray.data.schema import Question, problems


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
