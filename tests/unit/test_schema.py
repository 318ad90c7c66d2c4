"""The question record's own checks: what makes a row unusable."""

from tinyllm_ray.data.schema import Question, problems


def q(choices, answer="b", **kw):
    return Question(id=kw.pop("id", "x"), question=kw.pop("question", "Which?"), choices=tuple(choices),
                    answer=answer, **kw)


def test_a_good_question_has_no_problems():
    assert problems(q(["a", "b"])) == []
    assert q(["a", "b", "c"]).answer_letter == "b"


def test_a_repeated_wrong_option_is_accepted():
    item = q(["sky", "roots", "sky", "leaves"], answer="leaves")
    assert problems(item) == []
    assert item.answer_index == 3


def test_an_ambiguous_or_missing_answer_is_rejected():
    assert problems(q(["b", "a", "b"])) == ["the answer appears 2 times among the choices"]
    assert problems(q(["a", "c"])) == ["answer 'b' is not among the choices"]
    assert problems(q(["b", "b"])) == ["fewer than 2 distinct choices", "the answer appears 2 times among the choices"]


def test_empty_fields_and_choice_counts():
    assert problems(q(["b"])) == ["1 choice(s); at least 2 needed"]
    assert problems(q(["b", " "])) == ["an empty choice"]
    assert problems(q(["a", "b"], id=" ", question="")) == ["empty id", "empty question"]
    assert "27 choices; at most 26 supported" in problems(q([str(i) for i in range(26)] + ["b"]))


def test_text_that_cannot_be_stored_is_rejected():
    assert problems(q(["a", "b"], question="bad \ud800 text")) == ["question is not valid Unicode text"]
    assert problems(q(["a\udfff", "b"])) == ["a choice is not valid Unicode text"]
