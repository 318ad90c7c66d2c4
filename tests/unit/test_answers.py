"""Open answers (``answers.py``): normalised exact match, the final number, the scorer a dataset gets, and the one
number pattern and text normaliser that the readers and the option matcher share."""

from __future__ import annotations

import pytest

from tinyllm_ray import answers
from tinyllm_ray.answers import plain_number


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


@pytest.mark.parametrize(("text", "number"), [
    ("72", "72"), (" 1,234 ", "1234"), ("-1,234,567.25", "-1234567.25"), ("\u22123", "-3"), ("0.5", "0.5"),
    ("3,4", None), ("1,2345", None), ("$5", None), ("5 apples", None), ("+5", None), ("1e3", None), ("", None),
    ("\u0663", None),  # an Arabic-Indic digit: not an ASCII number
])
def test_plain_number(text, number):
    assert plain_number(text) == number


@pytest.mark.parametrize(("text", "found", "plain"), [
    ("1,234", [1234.0], "1234"),                       # the shared pattern: both read it alike
    ("\u22123.5", [-3.5], "-3.5"),
    ("3/4", [0.75], None),                             # a fraction: said in text, not a gold answer
    (".5", [0.5], None),                               # no digit before the point
    ("\u0663", [3.0], None),                           # a digit of another script
    ("$5", [5.0], None),                               # a sign or a unit around it
    ("5 apples", [5.0], None),
    ("1,2345", [1.0, 2345.0], None),                   # a comma not before three digits ends the number
])
def test_numbers_in_text_and_a_plain_gold_number_share_one_pattern_and_differ_only_here(text, found, plain):
    """One pattern, two strictnesses: ``plain_number`` (a dataset's gold answer, ``data/hub.py``) refuses what
    ``numbers`` (what a model says, the numeric scorer) reads."""
    assert answers.numbers(text) == found
    assert plain_number(text) == plain


@pytest.mark.parametrize(("text", "squad", "options", "spacing"), [
    ("Don't stop—the END_game!", "dont stop— endgame", "don t stop the end_game", "don't stop—the end_game!"),
    ("A  (b) An apple.", "b apple", "a b an apple", "a (b) an apple."),
    ("red-apple", "redapple", "red apple", "red-apple"),
    ("$17", "17", "17", "$17"),
])
def test_one_normaliser_with_the_settings_of_each_use(text, squad, options, spacing) -> None:
    """SQuAD's rule for the exact scorer; the option matcher's (``replies.match_choice``: any mark a space,
    articles kept); the echo check's of the authors' rationales (``data/official.py``: case and spacing only)."""
    assert answers.normalize(text) == squad
    assert answers.normalize(text, punctuation="split", articles=False) == options
    assert answers.normalize(text, punctuation="keep", articles=False) == spacing
    with pytest.raises(ValueError, match="punctuation must be one of drop, split, keep"):
        answers.normalize(text, punctuation="strip")
