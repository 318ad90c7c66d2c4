"""Unit tests for tinyllm_ray.replies: what teachers and the student write back (rationales kept or rejected,
a teacher's conclusion, the option an answer names)."""

from __future__ import annotations

import pytest

from tests.unit.test_prompts import POOL
from tinyllm_ray import prompts, replies
from tinyllm_ray.data.schema import Question
from tinyllm_ray.data.synthetic import generate

# --- clean_rationale ------------------------------------------------------------------------------


def test_clean_rationale_plain() -> None:
    assert replies.clean_rationale("  Because 2 + 3 = 5.  ") == ("Because 2 + 3 = 5.", None)


def test_clean_rationale_strips_leading_lead() -> None:
    assert replies.clean_rationale("Explanation: 2 + 3 = 5.") == ("2 + 3 = 5.", None)
    assert replies.clean_rationale("\n Explanation:   two steps.") == ("two steps.", None)


def test_clean_rationale_keeps_lead_word_inside_text() -> None:
    assert replies.clean_rationale("A short Explanation: none.") == ("A short Explanation: none.", None)


@pytest.mark.parametrize("marker", ["Q:", "Question:", "Context:"])
def test_clean_rationale_cuts_at_next_question(marker: str) -> None:
    raw = f" 2 + 3 = 5, so (b).\n{marker} Tom has 4 apples.\nAnswer: (a) 4"
    assert replies.clean_rationale(raw) == ("2 + 3 = 5, so (b).", None)


def test_clean_rationale_cuts_at_blank_lines() -> None:
    assert replies.clean_rationale("Line one.\nLine two.\n\n\nJunk") == ("Line one.\nLine two.", None)


def test_clean_rationale_keeps_multiline_reasoning() -> None:
    text = "Step 1: add.\nStep 2: compare."
    assert replies.clean_rationale(text) == (text, None)


@pytest.mark.parametrize("raw", ["", "   ", "\n\t\n", "Explanation:", "Explanation:   \n "])
def test_clean_rationale_rejects_empty(raw: str) -> None:
    assert replies.clean_rationale(raw) == ("", "empty")


@pytest.mark.parametrize(
    "raw", [" \n\nQ: Tom has 3 apples. How many?", "Explanation:\nQ: Tom has 3 apples.", "Explanation: \n\n\nQ: next"]
)
def test_clean_rationale_rejects_output_that_is_only_a_next_question(raw: str) -> None:
    assert replies.clean_rationale(raw) == ("", "empty")


# --- match_choice ---------------------------------------------------------------------------------

CHOICES = ("red apple", "green pear", "yellow banana")


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("green pear", 1),
        ("Green Pear.", 1),
        ("  YELLOW   banana!! ", 2),
        ("red-apple", 0),
        ("(b)", 1),
        ("(c) yellow banana", 2),
        ("a)", 0),
        (" (A) whatever", 0),
        ("banana", 2),
        ("a yellow fruit banana", 2),
        ("pear green", 1),
    ],
)
def test_match_choice(generated: str, expected: int) -> None:
    assert replies.match_choice(generated, CHOICES) == expected


@pytest.mark.parametrize("generated", ["", "   ", "xyzzy plugh", "!!!", "(z)", "(d)", "(e) nothing here"])
def test_match_choice_names_none(generated: str) -> None:
    assert replies.match_choice(generated, CHOICES) is None


def test_match_choice_tie_is_none() -> None:
    assert replies.match_choice("red", ("red apple", "red pear", "blue plum")) is None
    assert replies.match_choice("red apple", ("red apple", "red pear", "blue plum")) == 0


def test_match_choice_exact_text_beats_letter() -> None:
    # "(b)" is literally the text of choice 0; exact text wins over the letter reading
    assert replies.match_choice("b", ("b", "c")) == 0


def test_match_choice_numbers_with_currency() -> None:
    choices = ("$19", "$18", "$17")
    assert replies.match_choice("$17", choices) == 2
    assert replies.match_choice("17", choices) == 2
    assert replies.match_choice("(a)", choices) == 0


def test_match_choice_out_of_range_letter_on_two_choices() -> None:
    assert replies.match_choice("(c)", ("yes", "no")) is None
    assert replies.match_choice("(b)", ("yes", "no")) == 1


@pytest.mark.parametrize("q", generate(20, 1, 1, seed=5)["train"], ids=lambda q: q.id)
def test_match_choice_recovers_every_synthetic_answer(q: Question) -> None:
    assert replies.match_choice(q.answer, q.choices) == q.answer_index
    assert replies.match_choice(f"({q.answer_letter})", q.choices) == q.answer_index


# --- clean_rationale: echo, length, wrong conclusions -------------------------------------------

CAPITAL = Question(id="cap", question="What is the capital of France?", choices=("Paris", "Lyon", "Nice"),
                   answer="Lyon")  # a "gold" answer that is not Paris, to see which conclusions are caught


def test_clean_rationale_strips_echoed_prompt() -> None:
    prompt = prompts.teacher_prompt(POOL[1], POOL[2:4])
    raw = f"{prompt} Shop 1 sells 101 widgets, so (b) fits."
    assert replies.clean_rationale(raw, POOL[1], prompt) == ("Shop 1 sells 101 widgets, so (b) fits.", None)
    # not stripped when the output does not start with the prompt
    assert replies.clean_rationale("It sells 101.", POOL[1], prompt) == ("It sells 101.", None)


def test_clean_rationale_too_short() -> None:
    assert replies.clean_rationale("Because seven.", min_words=3) == ("Because seven.", "too_short")
    assert replies.clean_rationale("Because seven apples.", min_words=3) == ("Because seven apples.", None)
    assert replies.clean_rationale("Because seven.") == ("Because seven.", None)  # default: one word


@pytest.mark.parametrize(
    "raw",
    [
        "Lyon is small, so the answer is (c).",
        "Nice is on the coast. The answer is (A)",
        "The government sits there. So the correct answer is Paris.",
        "Paris has the government, so (a) is correct.",
        "The answer would be: paris; it is the largest city.",
        "The correct option is (c) Nice",
    ],
)
def test_clean_rationale_argues_other_option(raw: str) -> None:
    text, reason = replies.clean_rationale(raw, CAPITAL)
    assert reason == "argues_other_option"
    assert text == raw.strip()


@pytest.mark.parametrize(
    "raw",
    [
        "Lyon is named in the question, so the answer is (b).",
        "So the correct answer is Lyon.",
        "(b) is correct because the gold answer says so.",
        "The answer is (b) Lyon.",
        "Lyon, not Paris, is right here.",  # names another option, but draws no conclusion for it
        "The answer is (e) which is not an option.",  # a letter past the options names none
    ],
)
def test_clean_rationale_naming_the_gold_answer_is_accepted(raw: str) -> None:
    assert replies.clean_rationale(raw, CAPITAL) == (raw.strip(), None)


def test_clean_rationale_without_question_never_argues() -> None:
    raw = "Paris is the seat of government. So the correct answer is Paris."
    assert replies.clean_rationale(raw) == (raw, None)
    assert replies.clean_rationale(raw, CAPITAL)[1] == "argues_other_option"


def test_clean_rationale_reject_reasons_are_listed() -> None:
    assert {"empty", "too_short", "argues_other_option"} <= set(replies.REJECT_REASONS)


def test_clean_rationale_conclusion_followed_by_a_comma() -> None:
    q = Question(id="c", question="Capital of Italy?", choices=("Paris", "Rome"), answer="Rome")
    assert replies.clean_rationale("So the correct answer is Paris, because it is in France.", q)[1] == (
        "argues_other_option")
    assert replies.clean_rationale("So the correct answer is Rome, the capital.", q)[1] is None


# --- parse_answer (teacher evaluation) -----------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("12 + 3 = 15. The answer is 15.", 1),
    ("The answer is (c).", 2),
    ("the answer is: (a) 12", 0),
    ("First the answer is 12, no wait. So the answer is 15.", 1),  # the last conclusion counts
    ("Explanation: 12 + 3 = 15.\nThe answer is 15.\n\nQ: next question, the answer is 12", 1),  # cut at Q:
    ("The answer is 3.5 apples.", 3),  # a decimal point does not end the sentence
    ("It is probably fifteen.", None),  # no conclusion
    ("The answer is 99.", None),  # names no option
    ("", None),
])
def test_parse_answer_maps_the_last_conclusion_to_an_option(text: str, expected: int | None) -> None:
    choices = ("12", "15", "$20", "3.5 apples")
    assert replies.parse_answer(text, choices)[1] == expected


def test_parse_answer_returns_the_explanation_without_the_lead_or_a_following_question() -> None:
    explanation, index = replies.parse_answer("Explanation: 2 + 2 = 4. The answer is 4.\nQ: what is 3 + 3?",
                                              ("4", "5"))
    assert (explanation, index) == ("2 + 2 = 4. The answer is 4.", 0)


def test_a_loop_of_one_sentence_is_rejected_as_repetitive() -> None:
    # SmolLM2-135M's kind of loop: the step numbers differ, the sentence does not
    loop = "Step 1: The answer is (b) Max.\nStep 2: The answer is (b) Max.\nStep 3: The answer is (b) Max.\nStep 4"
    assert replies.clean_rationale(loop)[1] == "repetitive"
    twice = "Step 1: The answer is (b) Max.\nStep 2: The answer is (b) Max.\nSo Max is the tallest."
    assert replies.clean_rationale(twice)[1] is None  # twice is not a loop
    short = "Yes. Yes. Yes. So 2 + 3 = 5."  # segments under three words are not counted
    assert replies.clean_rationale(short)[1] is None


def test_a_generation_cut_at_its_limit_keeps_its_complete_sentences() -> None:
    raw = "First we add 3 and 4. That gives 7 apples. Then the cost of the toy car is $7 an"
    assert replies.clean_rationale(raw, cut_off=True) == ("First we add 3 and 4. That gives 7 apples.", None)
    assert replies.clean_rationale(raw)[0] == raw  # a generation that ended by itself keeps everything
    assert replies.clean_rationale("So 3 + 4 = 7.5 and then", cut_off=True)[0] == "So 3 + 4 = 7.5 and then"
    # a decimal point is not a sentence end; nothing complete before the cut: all of it is kept
