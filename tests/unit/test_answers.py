"""Open answers (``answers.py``): normalised exact match, the final number, and the scorer a dataset gets."""

from __future__ import annotations

import pytest

from tinyllm_ray import answers


@pytest.mark.parametrize(("said", "gold", "right"), [
    ("The Eiffel Tower!", "eiffel tower", True),      # case, punctuation, article
    ("an apple", "Apple", True),
    ("  Paris  ", "paris", True),
    ("Paris, France", "Paris", False),                 # exact: the whole text
    ("", "Paris", False),
    ("anything", "", False),                           # an empty gold answer matches nothing
])
def test_exact_match_ignores_case_punctuation_articles_and_spaces(said, gold, right) -> None:
    assert answers.correct(said, gold, answers.EXACT) is right


@pytest.mark.parametrize(("said", "gold", "right"), [
    ("1,234", "1234", True),                           # thousands separator
    ("$1,234.00", "1234", True),                       # currency and decimals
    ("She has 18 apples", "18", True),                 # trailing unit, leading words
    ("3 + 4 = 7, then 7 * 2 = 14", "14", True),        # the final number counts
    ("14 then 7", "14", False),
    ("-4", "-4", True),
    ("4", "-4", False),
    ("3/4", "0.75", True),
    ("twelve", "12", False),                           # no number said
    ("0.1", "1", False),
])
def test_numeric_equality_reads_the_final_number(said, gold, right) -> None:
    assert answers.correct(said, gold, answers.NUMERIC) is right


@pytest.mark.parametrize(("text", "expected"), [
    ("72", [72.0]), ("$1,234.50", [1234.5]), ("3, 4", [3.0, 4.0]), ("1/0 or 2", [2.0]), ("no number", []),
    ("v2.0 of 10", [10.0]),  # "v2.0": a version, not a number on its own (preceded by a letter)
])
def test_numbers_in_text(text, expected) -> None:
    assert answers.numbers(text) == expected


@pytest.mark.parametrize(("golds", "scorer"), [
    (["72", "1,200", "$5", "3.5 km"], answers.NUMERIC),
    (["72", "Paris"], answers.EXACT),
    (["18 apples and 3 pears"], answers.EXACT),        # two numbers: not a number answer
    ([], answers.EXACT),
])
def test_the_inferred_scorer_is_numeric_only_when_every_gold_answer_is_a_number(golds, scorer) -> None:
    assert answers.infer_scorer(golds) == scorer


def test_an_unknown_scorer_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown open-answer scorer 'fuzzy'"):
        answers.correct("a", "a", "fuzzy")
