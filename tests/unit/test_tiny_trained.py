"""Unit tests for tinyllm_ray.tiny_trained and tiny_skill: tiny teachers trained on CPU that know their families.

The default tests train with a small step budget (seconds); the full recipe's build (minutes) is the slow test.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tinyllm_ray import prompts, replies
from tinyllm_ray.data import synthetic
from tinyllm_ray.markers import NotOursError
from tinyllm_ray.tiny import TINY_MODEL_NAMES, build_tiny_models
from tinyllm_ray.tiny_parts import MARKER_FILE
from tinyllm_ray.tiny_skill import chance, evaluation_sets, family_accuracy
from tinyllm_ray.tiny_trained import (
    RECIPE,
    TEACHER_FAMILIES,
    TRAINED_TEACHERS,
    build_trained_teachers,
    held_out_texts,
    shot_pool,
    training_examples,
    training_questions,
)


@pytest.fixture(scope="module")
def held_out() -> set[str]:
    return held_out_texts()


# --- data ------------------------------------------------------------------------------------------


def test_family_of_recognises_every_generated_question() -> None:
    splits = synthetic.generate(300, 100, 100, seed=7)
    questions = [q for s in synthetic.SPLITS for q in splits[s]]
    seen = {synthetic.family_of(q) for q in questions}
    assert seen == set(synthetic.FAMILIES)
    for family in synthetic.FAMILIES:  # the same answer for the text as for the Question
        qs = synthetic.generate_families(30, [family], seed=1)
        assert {synthetic.family_of(q) for q in qs} == {family}
        assert {synthetic.family_of(q.question) for q in qs} == {family}
    with pytest.raises(ValueError, match="not a question of the synthetic families"):
        synthetic.family_of("What is the capital of France?")


def test_generate_families_deterministic_exclusive_and_leaves_generate_alone() -> None:
    before = synthetic.generate(20, 5, 5, seed=3)
    a = synthetic.generate_families(50, ["change", "days"], seed=5)
    assert a == synthetic.generate_families(50, ["change", "days"], seed=5)
    assert a != synthetic.generate_families(50, ["change", "days"], seed=6)
    assert {synthetic.family_of(q) for q in a} == {"change", "days"}
    assert len({q.question for q in a}) == 50
    assert all(replies.parse_answer(q.reference_rationale, q.choices)[1] == q.answer_index for q in a)
    skip = {q.question for q in a[:25]}
    b = synthetic.generate_families(50, ["change", "days"], seed=5, exclude=skip)
    assert not skip & {q.question for q in b}
    assert synthetic.generate(20, 5, 5, seed=3) == before
    with pytest.raises(ValueError, match="families"):
        synthetic.generate_families(5, ["geometry"])
    with pytest.raises(RuntimeError, match="unseen question"):
        synthetic.generate_families(500, ["days"])  # only 406 day questions exist


def test_teachers_know_different_families_that_cover_all() -> None:
    assert set(TEACHER_FAMILIES) == set(TRAINED_TEACHERS)
    a, b = (set(TEACHER_FAMILIES[n]) for n in TRAINED_TEACHERS)
    assert a and b and not a & b
    assert a | b == set(synthetic.FAMILIES)


@pytest.mark.parametrize("name", TRAINED_TEACHERS)
def test_training_data_never_holds_an_evaluation_question(name: str, held_out: set[str]) -> None:
    for seed in range(5):  # the quickstart's valid + test for data seeds 0-4 are held out
        splits = synthetic.generate(256, 64, 64, seed=seed)
        assert {q.question for q in splits["valid"] + splits["test"]} <= held_out
    questions = training_questions(name, exclude=held_out)
    assert {synthetic.family_of(q) for q in questions} == set(TEACHER_FAMILIES[name])
    assert not {q.question for q in questions} & held_out
    assert not {q.question for q in shot_pool(exclude=held_out)} & held_out


def test_training_examples_target_the_reference_rationale() -> None:
    from tinyllm_ray.tiny_parts import train_tokenizer, wrap_tokenizer

    tok = wrap_tokenizer(train_tokenizer(), seq2seq=False)
    batches = training_examples("skilled-a", 0, 6, tok)
    assert batches == training_examples("skilled-a", 0, 6, tok)  # deterministic
    assert len(batches) == 6 and all(len(b) == RECIPE.batch_size for b in batches)
    shots_seen, formats = set(), set()
    for batch in batches:
        for ids, prompt_len in batch:
            assert len(ids) <= RECIPE.max_tokens and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
            prompt = tok.decode(ids[:prompt_len], skip_special_tokens=True)
            target = tok.decode(ids[prompt_len:], skip_special_tokens=True)
            assert prompt.endswith(replies.RATIONALE_LEAD)
            assert target.startswith(" ") and target.strip().split(". ")[-1].startswith("The answer is ")
            formats.add(prompt.split("\n")[0])
            shots_seen.add(prompt.count("\nQ: ") + prompt.startswith("Q: "))
    assert formats == {prompts.TEACHER_INSTRUCTION, prompts.ANSWER_INSTRUCTION}
    assert shots_seen == {1 + k for k in RECIPE.shots}  # the question itself plus 0, 1 or 2 examples


# --- building --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_step(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both teachers after 2 training steps: the build's mechanics, not its skill."""
    return build_trained_teachers(tmp_path_factory.mktemp("trained"), steps=2)


def test_build_writes_loadable_teachers_with_marker(two_step: dict[str, Path]) -> None:
    from transformers import AutoConfig, AutoTokenizer

    assert tuple(two_step) == TRAINED_TEACHERS
    root = next(iter(two_step.values())).parent
    assert sorted(p.name for p in root.iterdir()) == sorted(TRAINED_TEACHERS)  # no temp dirs left
    for name, path in two_step.items():
        marker = json.loads((path / MARKER_FILE).read_text())
        assert marker["name"] == name and marker["steps"] == 2 and marker["seed"] == 0
        assert marker["families"] == list(TEACHER_FAMILIES[name]) and "recipe" in marker
        cfg = AutoConfig.from_pretrained(path)
        assert cfg.hidden_size // cfg.num_attention_heads == 32  # vLLM's CPU kernel needs head_dim >= 32
        assert cfg.max_position_embeddings == 1024
        tok = AutoTokenizer.from_pretrained(path)
        assert tok.padding_side == "left" and (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 3)


def test_second_build_reuses_without_training(two_step: dict[str, Path]) -> None:
    root = next(iter(two_step.values())).parent
    mtimes = {n: (p / MARKER_FILE).stat().st_mtime_ns for n, p in two_step.items()}
    start = time.perf_counter()
    assert build_trained_teachers(root, steps=2) == two_step
    assert time.perf_counter() - start < 2.0  # the data alone takes longer to prepare
    assert {n: (p / MARKER_FILE).stat().st_mtime_ns for n, p in two_step.items()} == mtimes


def test_build_tiny_models_trained_adds_the_teachers(two_step: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    for name, path in two_step.items():
        shutil.copytree(path, tmp_path / name)
    paths = build_tiny_models(tmp_path, trained=True, trained_steps=2)
    assert tuple(paths) == TINY_MODEL_NAMES + TRAINED_TEACHERS
    assert build_tiny_models(tmp_path) == {n: paths[n] for n in TINY_MODEL_NAMES}  # the default: random only


@pytest.mark.parametrize("name", TRAINED_TEACHERS)
def test_a_foreign_dir_in_the_way_is_refused_untouched(tmp_path: Path, name: str) -> None:
    mine = tmp_path / name
    mine.mkdir()
    (mine / "weights.bin").write_bytes(b"precious")
    with pytest.raises(NotOursError, match=rf"{name} exists and was not built by tinyllm"):
        build_trained_teachers(tmp_path, steps=2)
    with pytest.raises(NotOursError, match=rf"{name} exists and was not built by tinyllm"):
        build_tiny_models(tmp_path, trained=True, trained_steps=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing built beside it
    assert (mine / "weights.bin").read_bytes() == b"precious"


@pytest.mark.slow  # a second build: about 30 s on 2 cores
def test_a_build_of_another_step_count_is_rebuilt(two_step: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    shutil.copytree(two_step["skilled-a"], tmp_path / "skilled-a")
    paths = build_trained_teachers(tmp_path, steps=1)
    assert json.loads((paths["skilled-a"] / MARKER_FILE).read_text())["steps"] == 1


def test_cli_builds_the_trained_teachers_unless_random_only(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from tinyllm_ray import cli

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "skilled-a").mkdir()  # in the way of the trained teachers only: checked before any build
    assert cli.main(["tiny-models", str(tmp_path / "m"), "--random-only"]) == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([*TINY_MODEL_NAMES, "skilled-a"])
    capsys.readouterr()
    assert cli.main(["tiny-models", str(tmp_path / "m")]) == 2
    assert "skilled-a exists and was not built by tinyllm" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([*TINY_MODEL_NAMES, "skilled-a"])


# --- skill -----------------------------------------------------------------------------------------

# ~1,000 examples, ~25 s on 2 free cores: the rationale format is learnt, not yet the arithmetic (the full recipe's
# skills take minutes: they are the slow test's)
FAST_STEPS = 120


@pytest.fixture(scope="module")
def fast_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """skilled-a after ``FAST_STEPS`` steps of the recipe, saved like a build."""
    from tinyllm_ray.tiny_parts import save_model
    from tinyllm_ray.tiny_trained import train_teacher

    model, tokenizer = train_teacher("skilled-a", steps=FAST_STEPS)
    path = tmp_path_factory.mktemp("fast") / "skilled-a"
    save_model(path, model, tokenizer)
    return path


def _rationale_loss(path: Path | None, questions: list) -> float:
    """Mean loss per token of the reference rationales after the answering prompt (0 shots); None: untrained."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tinyllm_ray.tiny_parts import train_tokenizer, wrap_tokenizer
    from tinyllm_ray.tiny_trained import _model

    if path is None:
        torch.manual_seed(0)
        tok = wrap_tokenizer(train_tokenizer(), seq2seq=False)
        model = _model(len(tok), RECIPE).eval()
    else:
        model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    total = count = 0.0
    with torch.no_grad():
        for q in questions:
            prompt = tok(prompts.answer_prompt(q, []))["input_ids"]
            target = tok(" " + q.reference_rationale, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids = torch.tensor([prompt + target])
            labels = ids.clone()
            labels[0, : len(prompt)] = -100
            total += model(input_ids=ids, labels=labels).loss.item() * len(target)
            count += len(target)
    return total / count


@pytest.mark.slow  # 120 steps of CPU training: ~25 s on 2 free cores, more under load
def test_a_short_training_learns_the_rationales_of_its_families(fast_teacher: Path) -> None:
    """Held-out questions: the loss of the reference rationales drops far below an untrained model's on the
    teacher's own families, and the teacher concludes ``The answer is ...`` as its rationales do."""
    questions, pool = evaluation_sets([0])[0]
    own = [q for q in questions if synthetic.family_of(q) in TEACHER_FAMILIES["skilled-a"]][:24]
    untrained, trained = _rationale_loss(None, own), _rationale_loss(fast_teacher, own)
    assert untrained > 6.0  # ~ln(vocabulary size)
    assert trained < 0.15 * untrained, (trained, untrained)  # measured: 0.41 after 120 steps, 7.65 untrained
    from tinyllm_ray.tiny_skill import answers

    outs = answers(fast_teacher, own[:16], shots=0, pool=pool)
    concluded = sum(prompts.ANSWER_LEAD in text for text in outs)
    assert concluded >= 14, outs


# --- the full recipe (minutes): the measured skills ------------------------------------------------


@pytest.fixture(scope="module")
def full_build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_trained_teachers(tmp_path_factory.mktemp("full"))


# Measured with the recipe (seed 0, 0 shots) on the 640 valid + test questions of data seeds 0-4:
#   skilled-a: change 0.489 (chance 0.316), days 0.390 (0.344), arithmetic 0.006, ordering 0.000
#   skilled-b: arithmetic 0.519 (0.308), ordering 0.273 (0.337), change 0.011, days 0.000
# Each teacher is clearly above chance on one of its families; days is near chance and ordering below it, yet
# on both the teacher trained for them is far ahead of the other one (who answers none of them).
MIN_ABOVE_CHANCE = {"change": 0.10, "arithmetic": 0.10}
MIN_AHEAD_OF_OTHER = 0.15


@pytest.mark.slow  # a full build: ~10 min of training per teacher on 2 free cores
def test_full_recipe_teachers_know_their_own_families(full_build: dict[str, Path]) -> None:
    sets = evaluation_sets(range(5))
    questions = [q for qs, _ in sets for q in qs]
    base = chance(questions)
    acc: dict[str, dict[str, float]] = {}
    for name, path in full_build.items():
        right: dict[str, float] = {}
        for qs, pool in sets:
            for family, value in family_accuracy(path, qs, shots=0, pool=pool).items():
                right[family] = right.get(family, 0.0) + value * sum(synthetic.family_of(q) == family for q in qs)
        acc[name] = {f: v / sum(synthetic.family_of(q) == f for q in questions) for f, v in right.items()}
    for name in TRAINED_TEACHERS:
        other = next(n for n in TRAINED_TEACHERS if n != name)
        for family in TEACHER_FAMILIES[name]:
            if family in MIN_ABOVE_CHANCE:
                assert acc[name][family] > base[family] + MIN_ABOVE_CHANCE[family], (name, family, acc, base)
            assert acc[name][family] > acc[other][family] + MIN_AHEAD_OF_OTHER, (name, family, acc)
