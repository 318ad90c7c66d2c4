"""Unit tests for tinyllm_ray.prompts: teacher prompts, answering prompts, shot selection, student inputs, and a
teacher's own words (what comes back is read in ``replies.py``, tested in ``test_replies.py``)."""

from __future__ import annotations

import dataclasses

import pytest

from tinyllm_ray import prompts, replies
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
    assert text.endswith(replies.RATIONALE_LEAD)
    assert text.endswith("\nExplanation:")


@pytest.mark.parametrize("q", generate(8, 1, 1, seed=3)["train"], ids=lambda q: q.id)
def test_teacher_prompt_on_synthetic_questions(q: Question) -> None:
    text = prompts.teacher_prompt(q, [])
    assert q.question in text
    assert all(c in text for c in q.choices)
    assert f"({q.answer_letter}) {q.answer}" in text
    assert text.endswith(replies.RATIONALE_LEAD)


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


# --- answer_prompt (teacher evaluation) ----------------------------------------------------------


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


def test_a_teachers_own_words_replace_the_defaults_and_change_only_its_key():
    from tinyllm_ray import keys
    from tinyllm_ray.config import TeacherConfig, TeacherPromptConfig

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
    assert replies.clean_rationale("Reasoning: it adds up", lead="Reasoning:") == ("it adds up", None)

    teacher = TeacherConfig(name="t", model="m")
    same_words = TeacherPromptConfig(instruction=prompts.TEACHER_INSTRUCTION)
    assert keys.settings_key(teacher) == keys.settings_key(
        dataclasses.replace(teacher, prompt=same_words))  # the default text, written out: the same rows
    assert keys.settings_key(teacher) != keys.settings_key(dataclasses.replace(teacher, prompt=words))


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
