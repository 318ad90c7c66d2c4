"""Unit tests for tinyllm_ray.prompts: teacher prompts, shot selection, student inputs, output parsing."""

from __future__ import annotations

import dataclasses

import pytest

from tinyllm_ray import prompts
from tinyllm_ray.data.schema import Question
from tinyllm_ray.data.synthetic import generate


def make_question(i: int, context: str = "") -> Question:
    return Question(
        id=f"q{i}",
        question=f"Question number {i}: how many widgets does shop {i} sell?",
        choices=(f"{i} widgets", f"{i + 100} widgets", f"{i + 200} gadgets"),
        answer=f"{i + 100} widgets",
        context=context,
    )


POOL = [make_question(i) for i in range(12)]


# --- teacher_prompt -------------------------------------------------------------------------------


def test_teacher_prompt_shows_question_options_and_gold_answer() -> None:
    q = Question(id="x", question="Which fruit is yellow?", choices=("apple", "banana", "cherry"),
                 answer="banana")
    text = prompts.teacher_prompt(q, [])
    assert "Which fruit is yellow?" in text
    for letter, choice in zip("abc", q.choices):
        assert f"({letter}) {choice}" in text
    assert "Answer: (b) banana" in text
    assert "Explain step by step why (b) banana is the correct answer." in text
    assert text.startswith(prompts.TEACHER_INSTRUCTION)
    assert text.endswith(prompts.RATIONALE_LEAD)
    assert text.endswith("\nExplanation:")


@pytest.mark.parametrize("q", generate(8, 1, 1, seed=3)["train"], ids=lambda q: q.id)
def test_teacher_prompt_on_synthetic_questions(q: Question) -> None:
    text = prompts.teacher_prompt(q, [])
    assert q.question in text
    assert all(c in text for c in q.choices)
    assert f"({q.answer_letter}) {q.answer}" in text
    assert text.endswith(prompts.RATIONALE_LEAD)


def test_shots_come_before_the_question() -> None:
    q = POOL[0]
    shots = prompts.pick_shots(q, POOL, k=3, seed=0)
    text = prompts.teacher_prompt(q, shots)
    where_q = text.index(q.question)
    for shot in shots:
        assert text.index(shot.question) < where_q
        assert f"Answer: ({shot.answer_letter}) {shot.answer}" in text
    # shots are solved but not asked to be explained
    assert text.count("Explain step by step") == 1
    # the question's own block is last
    assert text.rindex("Q: ") == text.index(f"Q: {q.question}")


def test_shot_rationales_shown_when_given() -> None:
    q, shots = POOL[0], POOL[1:4]
    text = prompts.teacher_prompt(q, shots, shot_rationales=["first reason", "", "third reason"])
    assert "Explanation: first reason" in text
    assert "Explanation: third reason" in text
    # the empty one adds no explanation line; the final lead is the only other one
    assert text.count("Explanation:") == 3
    first = text.index(f"Answer: ({shots[0].answer_letter}) {shots[0].answer}\nExplanation: first reason")
    assert first < text.index(shots[1].question)


def test_fewer_rationales_than_shots() -> None:
    text = prompts.teacher_prompt(POOL[0], POOL[1:4], shot_rationales=["only one"])
    assert text.count("Explanation:") == 2


def test_no_rationales_without_shot_rationales() -> None:
    text = prompts.teacher_prompt(POOL[0], POOL[1:4])
    assert text.count("Explanation:") == 1


def test_context_line_shown_when_question_has_context() -> None:
    q = make_question(1, context="Shops open at nine.")
    text = prompts.teacher_prompt(q, [])
    assert "Context: Shops open at nine.\nQ: " in text
    assert "Context:" not in prompts.teacher_prompt(make_question(1), [])
    assert "Context: Shops open at nine." in prompts.student_input(q, "answer")


def test_context_of_a_shot_shown() -> None:
    shot = make_question(5, context="Shot context here.")
    text = prompts.teacher_prompt(POOL[0], [shot])
    assert text.index("Context: Shot context here.") < text.index(POOL[0].question)


# --- pick_shots -----------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, len(POOL) - 1])
def test_pick_shots_never_include_the_question(k: int) -> None:
    for seed in range(50):
        for q in POOL:
            shots = prompts.pick_shots(q, POOL, k=k, seed=seed)
            assert len(shots) == k
            assert q.id not in {s.id for s in shots}
            assert len({s.id for s in shots}) == k  # no repeats


def test_pick_shots_deterministic() -> None:
    q = POOL[4]
    assert prompts.pick_shots(q, POOL, 3, seed=7) == prompts.pick_shots(q, list(POOL), 3, seed=7)


def test_pick_shots_depends_on_seed_and_question() -> None:
    q = POOL[4]
    first = [s.id for s in prompts.pick_shots(q, POOL, 3, seed=0)]
    other_seeds = {tuple(s.id for s in prompts.pick_shots(q, POOL, 3, seed=s)) for s in range(1, 6)}
    assert any(list(ids) != first for ids in other_seeds)
    other_questions = {tuple(s.id for s in prompts.pick_shots(p, POOL, 3, seed=0)) for p in POOL[5:10]}
    assert len(other_questions) > 1


def test_pick_shots_excludes_question_by_id_even_if_not_same_object() -> None:
    q = make_question(3)  # equal id to POOL[3], a different object
    for seed in range(30):
        assert "q3" not in [s.id for s in prompts.pick_shots(q, POOL, len(POOL) - 1, seed)]


def test_pick_shots_question_outside_pool_may_use_whole_pool() -> None:
    q = make_question(99)
    assert len(prompts.pick_shots(q, POOL, len(POOL), seed=0)) == len(POOL)


def test_pick_shots_too_many() -> None:
    with pytest.raises(ValueError, match="shots"):
        prompts.pick_shots(POOL[0], POOL, k=len(POOL), seed=0)
    with pytest.raises(ValueError):
        prompts.pick_shots(POOL[0], POOL[:1], k=1, seed=0)


def test_pick_zero_shots() -> None:
    assert prompts.pick_shots(POOL[0], POOL[:1], k=0, seed=0) == []


# --- student_input --------------------------------------------------------------------------------


def test_student_input_prefixes() -> None:
    q = POOL[2]
    answer = prompts.student_input(q, prompts.ANSWER_TASK)
    assert answer.startswith("predict: Q: ")
    assert q.question in answer and "(b) 102 widgets" in answer
    assert "Answer" not in answer  # the student never sees the gold answer in its input
    rationale = prompts.student_input(q, "teacher-a")
    assert rationale.startswith("explain_teacher-a: Q: ")
    assert rationale.removeprefix("explain_teacher-a: ") == answer.removeprefix("predict: ")


def test_answer_target_is_choice_text() -> None:
    assert prompts.answer_target(POOL[2]) == "102 widgets"


# --- clean_rationale ------------------------------------------------------------------------------


def test_clean_rationale_plain() -> None:
    assert prompts.clean_rationale("  Because 2 + 3 = 5.  ") == ("Because 2 + 3 = 5.", None)


def test_clean_rationale_strips_leading_lead() -> None:
    assert prompts.clean_rationale("Explanation: 2 + 3 = 5.") == ("2 + 3 = 5.", None)
    assert prompts.clean_rationale("\n Explanation:   two steps.") == ("two steps.", None)


def test_clean_rationale_keeps_lead_word_inside_text() -> None:
    assert prompts.clean_rationale("A short Explanation: none.") == ("A short Explanation: none.", None)


@pytest.mark.parametrize("marker", ["Q:", "Question:", "Context:"])
def test_clean_rationale_cuts_at_next_question(marker: str) -> None:
    raw = f" 2 + 3 = 5, so (b).\n{marker} Tom has 4 apples.\nAnswer: (a) 4"
    assert prompts.clean_rationale(raw) == ("2 + 3 = 5, so (b).", None)


def test_clean_rationale_cuts_at_blank_lines() -> None:
    assert prompts.clean_rationale("Line one.\nLine two.\n\n\nJunk") == ("Line one.\nLine two.", None)


def test_clean_rationale_keeps_multiline_reasoning() -> None:
    text = "Step 1: add.\nStep 2: compare."
    assert prompts.clean_rationale(text) == (text, None)


@pytest.mark.parametrize("raw", ["", "   ", "\n\t\n", "Explanation:", "Explanation:   \n "])
def test_clean_rationale_rejects_empty(raw: str) -> None:
    assert prompts.clean_rationale(raw) == ("", "empty")


@pytest.mark.parametrize(
    "raw", [" \n\nQ: Tom has 3 apples. How many?", "Explanation:\nQ: Tom has 3 apples.", "Explanation: \n\n\nQ: next"]
)
def test_clean_rationale_rejects_output_that_is_only_a_next_question(raw: str) -> None:
    assert prompts.clean_rationale(raw) == ("", "empty")


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
    assert prompts.match_choice(generated, CHOICES) == expected


@pytest.mark.parametrize("generated", ["", "   ", "xyzzy plugh", "!!!", "(z)", "(d)", "(e) nothing here"])
def test_match_choice_names_none(generated: str) -> None:
    assert prompts.match_choice(generated, CHOICES) is None


def test_match_choice_tie_is_none() -> None:
    assert prompts.match_choice("red", ("red apple", "red pear", "blue plum")) is None
    assert prompts.match_choice("red apple", ("red apple", "red pear", "blue plum")) == 0


def test_match_choice_exact_text_beats_letter() -> None:
    # "(b)" is literally the text of choice 0; exact text wins over the letter reading
    assert prompts.match_choice("b", ("b", "c")) == 0


def test_match_choice_numbers_with_currency() -> None:
    choices = ("$19", "$18", "$17")
    assert prompts.match_choice("$17", choices) == 2
    assert prompts.match_choice("17", choices) == 2
    assert prompts.match_choice("(a)", choices) == 0


def test_match_choice_out_of_range_letter_on_two_choices() -> None:
    assert prompts.match_choice("(c)", ("yes", "no")) is None
    assert prompts.match_choice("(b)", ("yes", "no")) == 1


@pytest.mark.parametrize("q", generate(20, 1, 1, seed=5)["train"], ids=lambda q: q.id)
def test_match_choice_recovers_every_synthetic_answer(q: Question) -> None:
    assert prompts.match_choice(q.answer, q.choices) == q.answer_index
    assert prompts.match_choice(f"({q.answer_letter})", q.choices) == q.answer_index


# --- prompt_variants ------------------------------------------------------------------------------


def test_prompt_variants_fullest_first_down_to_none() -> None:
    q, shots = POOL[0], POOL[1:4]
    variants = prompts.prompt_variants(q, shots, ["why one", "why two", "why three"])
    assert len(variants) == len(shots) + 1
    assert variants[0] == prompts.teacher_prompt(q, shots, ["why one", "why two", "why three"])
    for n, text in zip(range(len(shots), -1, -1), variants):
        assert [s.question in text for s in shots] == [i < n for i in range(len(shots))]
        assert text.count("Answer:") == n + 1
    assert variants[-1] == prompts.teacher_prompt(q, [])
    assert "why one" not in variants[-1] and "why one" in variants[-2] and "why two" not in variants[-2]
    assert [len(v) for v in variants] == sorted((len(v) for v in variants), reverse=True)


def test_prompt_variants_without_shots() -> None:
    assert prompts.prompt_variants(POOL[0], []) == [prompts.teacher_prompt(POOL[0], [])]


# --- clean_rationale: echo, length, wrong conclusions -------------------------------------------

CAPITAL = Question(id="cap", question="What is the capital of France?", choices=("Paris", "Lyon", "Nice"),
                   answer="Lyon")  # a "gold" answer that is not Paris, to see which conclusions are caught


def test_clean_rationale_strips_echoed_prompt() -> None:
    prompt = prompts.teacher_prompt(POOL[1], POOL[2:4])
    raw = f"{prompt} Shop 1 sells 101 widgets, so (b) fits."
    assert prompts.clean_rationale(raw, POOL[1], prompt) == ("Shop 1 sells 101 widgets, so (b) fits.", None)
    # not stripped when the output does not start with the prompt
    assert prompts.clean_rationale("It sells 101.", POOL[1], prompt) == ("It sells 101.", None)


def test_clean_rationale_too_short() -> None:
    assert prompts.clean_rationale("Because seven.", min_words=3) == ("Because seven.", "too_short")
    assert prompts.clean_rationale("Because seven apples.", min_words=3) == ("Because seven apples.", None)
    assert prompts.clean_rationale("Because seven.") == ("Because seven.", None)  # default: one word


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
    text, reason = prompts.clean_rationale(raw, CAPITAL)
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
    assert prompts.clean_rationale(raw, CAPITAL) == (raw.strip(), None)


def test_clean_rationale_without_question_never_argues() -> None:
    raw = "Paris is the seat of government. So the correct answer is Paris."
    assert prompts.clean_rationale(raw) == (raw, None)
    assert prompts.clean_rationale(raw, CAPITAL)[1] == "argues_other_option"


def test_clean_rationale_reject_reasons_are_listed() -> None:
    assert {"empty", "too_short", "argues_other_option"} <= set(prompts.REJECT_REASONS)


def test_clean_rationale_conclusion_followed_by_a_comma() -> None:
    q = Question(id="c", question="Capital of Italy?", choices=("Paris", "Rome"), answer="Rome")
    assert prompts.clean_rationale("So the correct answer is Paris, because it is in France.", q)[1] == (
        "argues_other_option")
    assert prompts.clean_rationale("So the correct answer is Rome, the capital.", q)[1] is None


# --- answer_prompt / parse_answer (teacher evaluation) -----------------------------------------------


def test_answer_prompt_never_shows_the_gold_answer_of_the_question() -> None:
    q = Question(id="x", question="Which fruit is yellow?", choices=("apple", "banana", "cherry"), answer="banana")
    text = prompts.answer_prompt(q, [])
    assert text.startswith(prompts.ANSWER_INSTRUCTION)
    assert text.endswith("Options: (a) apple (b) banana (c) cherry\nExplanation:")
    assert "Answer:" not in text and prompts.ANSWER_LEAD not in text


def test_answer_prompt_shots_end_with_their_conclusion_once() -> None:
    q, with_reason, bare = POOL[0], POOL[1], POOL[2]
    text = prompts.answer_prompt(q, [with_reason, bare], ["Shop 1 sells 101. The answer is (b) 101 widgets.", ""])
    assert text.count("The answer is (b) 101 widgets.") == 1  # already concluded: not repeated
    assert f"Explanation: The answer is (b) {bare.answer}." in text  # no rationale: the conclusion alone
    assert text.index(bare.question) < text.index(q.question)
    explained = prompts.answer_prompt(q, [with_reason], ["It is the second option."])
    assert f"It is the second option. The answer is (b) {with_reason.answer}." in explained


def test_answer_variants_drop_examples_one_by_one() -> None:
    variants = prompts.answer_variants(POOL[0], POOL[1:3])
    assert [v.count("Options:") for v in variants] == [3, 2, 1]


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
    assert prompts.parse_answer(text, choices)[1] == expected


def test_parse_answer_returns_the_explanation_without_the_lead_or_a_following_question() -> None:
    explanation, index = prompts.parse_answer("Explanation: 2 + 2 = 4. The answer is 4.\nQ: what is 3 + 3?",
                                              ("4", "5"))
    assert (explanation, index) == ("2 + 2 = 4. The answer is 4.", 0)


def test_a_teachers_own_words_replace_the_defaults_and_change_only_its_key():
    from tinyllm_ray.config import TeacherConfig, TeacherPromptConfig
    from tinyllm_ray.teachers import runner

    q, shot = make_question(1), make_question(2)
    words = TeacherPromptConfig(instruction="Clinical questions with their answers.", rationale_lead="Reasoning:",
                                explain_request="Justify {answer} as a clinician would.", answer_label="Correct:")
    text = prompts.TeacherText.of(words)
    assert text.answer_instruction == prompts.ANSWER_INSTRUCTION  # a key left out keeps the default
    prompt = prompts.teacher_prompt(q, [shot], ["the reason"], text)
    assert prompt.startswith("Clinical questions with their answers.")
    assert f"Correct: {prompts.format_answer(shot)}\nReasoning: the reason" in prompt
    assert prompt.endswith(f"Justify {prompts.format_answer(q)} as a clinician would.\nReasoning:")
    assert prompts.TEACHER_INSTRUCTION not in prompt and "Explanation:" not in prompt
    assert prompts.clean_rationale("Reasoning: it adds up", lead="Reasoning:") == ("it adds up", None)

    teacher = TeacherConfig(name="t", model="m")
    same_words = TeacherPromptConfig(instruction=prompts.TEACHER_INSTRUCTION)
    assert runner.settings_key(teacher) == runner.settings_key(
        dataclasses.replace(teacher, prompt=same_words))  # the default text, written out: the same rows
    assert runner.settings_key(teacher) != runner.settings_key(dataclasses.replace(teacher, prompt=words))


@pytest.mark.parametrize(("request_text", "ok"), [("Why is {answer} right?", True), ("Why is it right?", False),
                                                  ("Why is {answer} right for {name}?", False), ("{", False)])
def test_the_explanation_request_must_name_the_answer(request_text, ok):
    from tinyllm_ray.config import ConfigError, from_dict, validate

    config = from_dict({"student": {"model": "s"}, "teachers": [
        {"name": "t", "model": "m", "prompt": {"explain_request": request_text}}]})
    if ok:
        validate(config, check_paths=False)
        return
    with pytest.raises(ConfigError, match=r"teachers\.0\.prompt\.explain_request: must name the gold answer"):
        validate(config, check_paths=False)


def test_a_prompt_template_file_gives_the_teachers_words(tmp_path, monkeypatch):
    """``teachers[i].prompt: file.yaml``: the file's keys, read relative to the config that names it (or to the
    working directory from ``--set``); a missing or non-mapping file is one error naming the key."""
    from tinyllm_ray.config import ConfigError, load_config

    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "math.yaml").write_text("instruction: Math word problems with their answers.\n"
                                                    "rationale_lead: 'Solution:'\n")
    (tmp_path / "list.yaml").write_text("- instruction\n")
    (tmp_path / "run.yaml").write_text("student: {model: s}\nteachers:\n"
                                       "  - {name: t, model: m, prompt: prompts/math.yaml}\n  - {name: u, model: m}\n")
    config = load_config(tmp_path / "run.yaml", check_paths=False)
    words = config.teachers[0].prompt
    assert (words.instruction, words.rationale_lead, words.explain_request) == (
        "Math word problems with their answers.", "Solution:", None)
    assert config.teachers[1].prompt is None
    monkeypatch.chdir(tmp_path / "prompts")
    again = load_config(tmp_path / "run.yaml", ["teachers.1.prompt=math.yaml"], check_paths=False)
    assert again.teachers[1].prompt == words
    with pytest.raises(ConfigError, match=r"teachers\.1\.prompt: template file not found: .*nope\.yaml"):
        load_config(tmp_path / "run.yaml", ["teachers.1.prompt=nope.yaml"], check_paths=False)
    with pytest.raises(ConfigError, match=r"teachers\.1\.prompt: template file .*list\.yaml must hold a mapping"):
        load_config(tmp_path / "run.yaml", [f"teachers.1.prompt={tmp_path / 'list.yaml'}"], check_paths=False)


def test_a_loop_of_one_sentence_is_rejected_as_repetitive() -> None:
    # SmolLM2-135M's kind of loop: the step numbers differ, the sentence does not
    loop = "Step 1: The answer is (b) Max.\nStep 2: The answer is (b) Max.\nStep 3: The answer is (b) Max.\nStep 4"
    assert prompts.clean_rationale(loop)[1] == "repetitive"
    twice = "Step 1: The answer is (b) Max.\nStep 2: The answer is (b) Max.\nSo Max is the tallest."
    assert prompts.clean_rationale(twice)[1] is None  # twice is not a loop
    short = "Yes. Yes. Yes. So 2 + 3 = 5."  # segments under three words are not counted
    assert prompts.clean_rationale(short)[1] is None


def test_a_generation_cut_at_its_limit_keeps_its_complete_sentences() -> None:
    raw = "First we add 3 and 4. That gives 7 apples. Then the cost of the toy car is $7 an"
    assert prompts.clean_rationale(raw, cut_off=True) == ("First we add 3 and 4. That gives 7 apples.", None)
    assert prompts.clean_rationale(raw)[0] == raw  # a generation that ended by itself keeps everything
    assert prompts.clean_rationale("So 3 + 4 = 7.5 and then", cut_off=True)[0] == "So 3 + 4 = 7.5 and then"
    # a decimal point is not a sentence end; nothing complete before the cut: all of it is kept
