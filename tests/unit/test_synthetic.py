"""Tests for the built-in synthetic dataset generator."""

from __future__ import annotations

import collections
import random
import re

import pytest

from tinyllm_ray.data import synthetic
from tinyllm_ray.data.schema import Question, problems
from tinyllm_ray.data.synthetic import DAYS, generate


@pytest.fixture(scope="module")
def data() -> dict[str, list[Question]]:
    return generate(300, 100, 100, seed=7)


def _all(d: dict[str, list[Question]]) -> list[Question]:
    return [q for split in synthetic.SPLITS for q in d[split]]


# --- independent solvers: recompute the gold answer from the question text ---------------------

_GAIN = {"buys", "finds", "gets"}
_LOSS = {"gives", "loses", "sells"}


def _solve_arithmetic(text: str) -> int:
    total = int(re.match(r"\w+ has (\d+) ", text).group(1))
    steps = re.findall(r"\b(buys|finds|gets|gives|loses|sells) (\d+)", text)
    assert 2 <= len(steps) <= 3, text
    for verb, n in steps:
        total += int(n) if verb in _GAIN else -int(n)
        assert total >= 0, text
    return total


def _solve_days(text: str) -> str:
    m = re.match(r"If today is (\w+), what day (will it be in|was it) (\d+) days", text)
    start, n = DAYS.index(m.group(1)), int(m.group(3))
    return DAYS[(start + n) % 7 if m.group(2).startswith("will") else (start - n) % 7]


def _solve_change(text: str) -> str:
    prices = [int(p) for p in re.findall(r"for \$(\d+)", text)]
    bill = int(re.search(r"with a \$(\d+) bill", text).group(1))
    assert bill > sum(prices), text
    return f"${bill - sum(prices)}"


def _solve_ordering(text: str) -> str:
    rel = next(r for r in synthetic._RELATIONS if re.search(rf"\b({r[0]}|{r[1]}) than\b", text))
    more, less, top, bottom = rel
    above: dict[str, str] = {}  # person -> the one directly below
    for a, word, b in re.findall(r"(\w+) is (\w+) than (\w+)\.", text):
        hi, lo = (a, b) if word == more else (b, a)
        above[hi] = lo
    first = (set(above) - set(above.values())).pop()
    order = [first]
    while order[-1] in above:
        order.append(above[order[-1]])
    m = re.search(rf"Who is the (second )?({top}|{bottom})\?", text)
    rank = 1 if m.group(1) else 0
    return order[rank] if m.group(2) == top else order[-1 - rank]


def _solve(text: str) -> str:
    if text.startswith("If today is"):
        return _solve_days(text)
    if "change" in text:
        return _solve_change(text)
    if " than " in text:
        return _solve_ordering(text)
    return str(_solve_arithmetic(text))


# --- tests ---------------------------------------------------------------------------------------


def test_deterministic_for_seed() -> None:
    assert generate(50, 10, 10, seed=3) == generate(50, 10, 10, seed=3)
    assert generate(50, 10, 10, seed=3) != generate(50, 10, 10, seed=4)


def test_split_sizes(data: dict[str, list[Question]]) -> None:
    assert set(data) == {"train", "valid", "test"}
    assert [len(data[s]) for s in synthetic.SPLITS] == [300, 100, 100]
    empty = generate(0, 0, 0)
    assert empty == {"train": [], "valid": [], "test": []}


def test_ids_unique_and_formatted(data: dict[str, list[Question]]) -> None:
    for split, items in data.items():
        assert [q.id for q in items] == [f"synth-{split}-{i:05d}" for i in range(len(items))]
    ids = [q.id for q in _all(data)]
    assert len(set(ids)) == len(ids)


def test_no_question_text_shared() -> None:
    d = generate(2000, 300, 300, seed=11)
    texts = [q.question for q in _all(d)]
    assert len(set(texts)) == len(texts)
    train = {q.question for q in d["train"]}
    assert not train & {q.question for q in d["test"]}
    assert not train & {q.question for q in d["valid"]}


def test_every_item_valid(data: dict[str, list[Question]]) -> None:
    for q in _all(data):
        assert problems(q) == [], (q, problems(q))
        assert all(c == c.strip() and c for c in q.choices)
        assert len(q.question.split()) <= 40, q.question
        assert len(q.reference_rationale.split()) <= 60, q.reference_rationale


def test_all_families_occur(data: dict[str, list[Question]]) -> None:
    kinds = collections.Counter(
        "days" if q.question.startswith("If today") else "change" if "change" in q.question
        else "ordering" if " than " in q.question else "arithmetic"
        for q in _all(data)
    )
    assert set(kinds) == set(synthetic.FAMILIES)
    assert min(kinds.values()) >= 50


@pytest.mark.parametrize("lo,hi", [(2, 5), (3, 4), (2, 2), (5, 5)])
def test_choice_counts_in_range(lo: int, hi: int) -> None:
    items = generate(500, 0, 0, seed=5, min_choices=lo, max_choices=hi)["train"]
    counts = collections.Counter(len(q.choices) for q in items)
    assert set(counts) == set(range(lo, hi + 1))


def test_answer_position_roughly_uniform() -> None:
    items = generate(800, 0, 0, seed=9, min_choices=4, max_choices=4)["train"]
    positions = collections.Counter(q.answer_index for q in items)
    assert set(positions) == {0, 1, 2, 3}
    assert all(120 <= c <= 280 for c in positions.values()), positions


def test_rationale_names_answer(data: dict[str, list[Question]]) -> None:
    for q in _all(data):
        assert q.reference_rationale.strip()
        assert q.answer in q.reference_rationale
        assert q.reference_rationale.endswith(f"The answer is {q.answer}.")


def test_gold_answers_correct(data: dict[str, list[Question]]) -> None:
    for q in _all(data):
        assert _solve(q.question) == q.answer, q


def test_arithmetic_family_terms() -> None:
    for s in range(300):
        draft = synthetic._arithmetic(random.Random(s), 5)
        assert int(draft.answer) == sum(draft.terms) == _solve_arithmetic(draft.question)
        running = 0
        for t in draft.terms:
            running += t
            assert running >= 0
        assert len(draft.distractors) == 4 and draft.answer not in draft.distractors
        assert all(int(x) >= 0 for x in draft.distractors)


@pytest.mark.parametrize("family", sorted(synthetic.FAMILIES))
def test_each_family_gives_k_minus_one_distinct_distractors(family: str) -> None:
    make = synthetic.FAMILIES[family]
    for s in range(100):
        for k in range(2, 6):
            draft = make(random.Random(s), k)
            assert len(draft.distractors) == k - 1
            assert len(set(draft.distractors)) == k - 1
            assert draft.answer not in draft.distractors
            assert _solve(draft.question) == draft.answer


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_train": -1},
        {"n_valid": -2},
        {"n_test": -1},
        {"min_choices": 1},
        {"max_choices": 6},
        {"min_choices": 4, "max_choices": 3},
        {"n_train": 2.5},
        {"seed": "x"},
    ],
)
def test_bad_arguments(kwargs: dict) -> None:
    args = {"n_train": 1, "n_valid": 1, "n_test": 1, **kwargs}
    with pytest.raises(ValueError):
        generate(**args)


def test_exhausted_question_space_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    const = synthetic._Draft("Same question?", "a", ("b", "c", "d", "e"), "The answer is a.")
    monkeypatch.setattr(synthetic, "FAMILIES", {"const": lambda rng, k: const})
    monkeypatch.setattr(synthetic, "MAX_ATTEMPTS", 5)
    with pytest.raises(RuntimeError):
        generate(2, 0, 0)


# -- the open variant ----------------------------------------------------------------------------------------

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
