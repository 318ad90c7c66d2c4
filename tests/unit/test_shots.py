"""Unit tests for tinyllm_ray.teachers.shots: random, similar and generated in-context examples."""

from __future__ import annotations

import pytest

from tinyllm_ray.data.schema import Question
from tinyllm_ray.data.synthetic import generate
from tinyllm_ray.teachers import shots

TRAIN = generate(40, 1, 1, seed=3)["train"]


def q(id_: str, question: str, choices: tuple[str, ...] = ("yes", "no"), context: str = "") -> Question:
    return Question(id=id_, question=question, choices=choices, answer=choices[0], context=context)


# --- random ---------------------------------------------------------------------------------------


def test_random_never_picks_the_question_itself() -> None:
    for seed in range(5):
        picked = shots.random_shots(TRAIN, TRAIN, 3, seed)
        assert set(picked) == {x.id for x in TRAIN}
        for x in TRAIN:
            ids = [s.id for s in picked[x.id]]
            assert len(ids) == 3 == len(set(ids))
            assert x.id not in ids


def test_random_deterministic_per_seed() -> None:
    first = shots.random_shots(TRAIN, TRAIN, 3, seed=11)
    again = shots.random_shots(TRAIN, list(TRAIN), 3, seed=11)
    assert first == again
    other = shots.random_shots(TRAIN, TRAIN, 3, seed=12)
    assert any([s.id for s in first[x.id]] != [s.id for s in other[x.id]] for x in TRAIN)


def test_random_too_few_questions() -> None:
    with pytest.raises(ValueError, match="shots"):
        shots.random_shots(TRAIN[:3], TRAIN[:3], 3, seed=0)


# --- similar --------------------------------------------------------------------------------------

SIMILAR_POOL = [
    q("a", "Which planet is the largest in the solar system?", ("Jupiter", "Mars", "Venus")),
    q("b", "How many eggs does the farmer sell at the market on Monday?", ("12", "14", "16")),
    q("c", "What colour is the sky on a clear summer day?", ("blue", "green", "red")),
    q("d", "How many eggs does the farmer sell at the market on Tuesday?", ("12", "14", "18")),
    q("e", "Who wrote the play about the prince of Denmark?", ("Shakespeare", "Marlowe", "Jonson")),
    q("f", "Which river flows through the city of Cairo in Egypt?", ("Nile", "Thames", "Seine")),
]


def test_similar_picks_near_duplicate_first_and_never_itself() -> None:
    picked = shots.similar_shots(SIMILAR_POOL, SIMILAR_POOL, 2)
    assert picked["b"][0].id == "d"
    assert picked["d"][0].id == "b"
    for x in SIMILAR_POOL:
        ids = [s.id for s in picked[x.id]]
        assert len(ids) == 2 == len(set(ids))
        assert x.id not in ids


def test_similar_question_outside_pool() -> None:
    new = q("new", "How many eggs does the farmer sell at the market on Friday?", ("12", "14", "20"))
    picked = shots.similar_shots([new], SIMILAR_POOL, 2)
    assert {s.id for s in picked["new"]} == {"b", "d"}


def test_similar_identical_copy_of_the_question_is_picked_but_itself_is_not() -> None:
    original = SIMILAR_POOL[2]
    copy = q("c-copy", original.question, original.choices)
    pool = [*SIMILAR_POOL, copy]
    assert shots.similar_shots([original], pool, 1)[original.id][0].id == "c-copy"
    assert shots.similar_shots([copy], pool, 1)["c-copy"][0].id == original.id


def test_similar_ties_deterministic_in_pool_order() -> None:
    # The same words for every pool question: every score ties; the earlier pool question wins.
    pool = [q(f"t{i}", "Is the red ball heavier than the blue ball?") for i in range(6)]
    picked = shots.similar_shots(pool, pool, 3)
    assert [s.id for s in picked["t0"]] == ["t1", "t2", "t3"]
    assert [s.id for s in picked["t4"]] == ["t0", "t1", "t2"]
    reversed_pool = pool[::-1]
    again = shots.similar_shots(pool, reversed_pool, 3)
    assert [s.id for s in again["t0"]] == ["t5", "t4", "t3"]
    assert shots.similar_shots(pool, pool, 3) == picked


def test_similar_chunks_give_same_result() -> None:
    assert shots.similar_shots(TRAIN, TRAIN, 3, chunk=7) == shots.similar_shots(TRAIN, TRAIN, 3)


def test_similar_zero_shots() -> None:
    assert shots.similar_shots(SIMILAR_POOL, SIMILAR_POOL, 0) == {x.id: [] for x in SIMILAR_POOL}


def test_similar_too_few_questions() -> None:
    with pytest.raises(ValueError, match="shots"):
        shots.similar_shots(SIMILAR_POOL[:3], SIMILAR_POOL[:3], 3)
    assert len(shots.similar_shots(SIMILAR_POOL[:3], SIMILAR_POOL[:3], 2)["a"]) == 2


# --- generated ------------------------------------------------------------------------------------


def test_pool_questions_seeded_and_sized() -> None:
    pool = shots.pool_questions(TRAIN, 8, seed=5)
    assert len(pool) == 8 == len({x.id for x in pool})
    assert {x.id for x in pool} <= {x.id for x in TRAIN}
    assert shots.pool_questions(TRAIN, 8, seed=5) == pool
    assert any(shots.pool_questions(TRAIN, 8, seed=s) != pool for s in range(6, 10))
    assert len(shots.pool_questions(TRAIN, 1000, seed=5)) == len(TRAIN)


def test_generated_shots_use_the_explained_rationales() -> None:
    pool = TRAIN[:5]
    explained = {x.id: (x, f"rationale of {x.id}") for x in pool}
    picked = shots.generated_shots(TRAIN, explained, 2, seed=1)
    assert set(picked) == {x.id for x in TRAIN}
    for x in TRAIN:
        examples, rationales = picked[x.id]
        assert len(examples) == 2
        assert x.id not in [s.id for s in examples]
        assert {s.id for s in examples} <= set(explained)
        assert rationales == [f"rationale of {s.id}" for s in examples]
    assert shots.generated_shots(TRAIN, explained, 2, seed=1) == picked


def test_generated_shots_fewer_explained_than_k() -> None:
    explained = {x.id: (x, f"why {x.id}") for x in TRAIN[:2]}
    picked = shots.generated_shots(TRAIN, explained, 4, seed=0)
    outside = TRAIN[10]
    assert sorted(s.id for s in picked[outside.id][0]) == sorted(explained)
    # a pool question gets the one other explained question, never itself
    examples, rationales = picked[TRAIN[0].id]
    assert [s.id for s in examples] == [TRAIN[1].id]
    assert rationales == [f"why {TRAIN[1].id}"]
    assert shots.generated_shots(TRAIN[:3], {}, 4, seed=0) == {x.id: ([], []) for x in TRAIN[:3]}
