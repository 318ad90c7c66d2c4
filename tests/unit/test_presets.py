"""Every shipped config loads, the paper presets hold the authors' settings, and ``extends`` merges presets the
way docs/configuration.md says."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from tests.helpers import REPO, SHARED_DATA
from tinyllm_ray.config import ConfigError, load_config

CONFIGS = REPO / "configs"
PRESETS = sorted(p for p in CONFIGS.rglob("*.yaml") if not p.name.startswith("_"))
PAPER = ("obqa", "arc", "piqa", "riddlesense", "pubmedqa", "bioasq")
# student.max_input_tokens per dataset (measured on the authors' files where we have them; see each preset)
INPUT_TOKENS = {"obqa": 128, "arc": 192, "piqa": 256, "riddlesense": 160, "pubmedqa": 1024, "bioasq": 1024}
SHARED_DIR = {"obqa": "obqa", "arc": "arc", "piqa": "piqa", "riddlesense": "riddle"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_preset_loads_and_names_its_command(path):
    config = load_config(path, check_paths=False)
    assert path.read_text().startswith(f"# python jobs/distill.py --config configs/{path.relative_to(CONFIGS)}")
    assert config.output.run_name


def assert_paper_training(config, name):
    """The authors' training setup (issue #15): lr 5e-5, 8 x 8 = 64 per step, 10,000 steps, valid scored and
    checkpointed every 250 steps, every loss weight 1; our per-dataset input length."""
    t = config.train
    assert (t.lr, t.batch_size, t.grad_accum_steps, t.max_steps) == (5e-5, 8, 8, 10_000)
    assert (t.checkpoint_every, config.eval.every_steps) == (250, 250)
    assert t.gamma == 1.0 and set(config.task_weights().values()) == {1.0}
    assert t.use_gpu and t.num_workers == 1 and t.warmup_steps == 0
    assert config.eval.select_on == "generate"
    assert config.student.max_input_tokens == INPUT_TOKENS[name]
    assert not config.compare and config.tune is None  # baselines and sweeps cost GPUs: opt in with --set


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets_have_the_authors_two_teachers_and_three_student_sizes(name):
    for suffix, size in (("", "base"), ("-small", "small"), ("-large", "large")):
        config = load_config(CONFIGS / "paper" / f"{name}{suffix}.yaml", check_paths=False)
        assert [(t.name, t.model, t.engine) for t in config.teachers] == [
            ("flan-t5-xl", "google/flan-t5-xl", "hf"), ("llama-2-chat", "meta-llama/Llama-2-7b-chat-hf", "vllm")]
        assert all(t.num_gpus == 1 for t in config.teachers)
        assert config.student.model == f"google/flan-t5-{size}"
        assert config.output.run_name == f"{name}-flan-t5-{size}"
        assert_paper_training(config, name)


@pytest.mark.parametrize("name", PAPER)
def test_three_teacher_presets_are_the_paper_presets_plus_vicuna(name):
    three = load_config(CONFIGS / "paper" / "three-teachers" / f"{name}.yaml", check_paths=False)
    two = load_config(CONFIGS / "paper" / f"{name}.yaml", check_paths=False)
    assert [t.name for t in three.teachers] == ["flan-t5-xl", "llama-2-chat", "vicuna"]
    assert three.teachers[:2] == two.teachers  # the same first two teachers, entry for entry
    assert (three.teachers[2].model, three.teachers[2].engine, three.teachers[2].num_gpus) == (
        "lmsys/vicuna-7b-v1.5", "vllm", 1)
    assert three.output.run_name == f"{name}-three-teachers-flan-t5-base"
    assert_paper_training(three, name)
    # everything else (data, student, train, eval) is the two-teacher preset's
    assert dataclasses.replace(three, teachers=two.teachers, output=two.output) == two


@pytest.mark.parametrize("name", PAPER)
def test_modern_presets_have_current_teachers_and_a_small_causal_student(name):
    config = load_config(CONFIGS / "modern" / f"{name}.yaml", check_paths=False)
    assert [(t.model, t.engine, t.num_gpus) for t in config.teachers] == [
        ("meta-llama/Llama-3.1-8B-Instruct", "vllm", 1), ("Qwen/Qwen2.5-7B-Instruct", "vllm", 1)]
    assert all(t.max_model_len and t.max_model_len > t.max_new_tokens for t in config.teachers)
    assert config.student.model == "Qwen/Qwen2.5-0.5B" and config.train.mode == "prefix"
    assert config.train.batch_size * config.train.grad_accum_steps == 64 and config.train.use_gpu
    assert config.student.max_input_tokens == INPUT_TOKENS[name]
    assert config.data == load_config(CONFIGS / "paper" / f"{name}.yaml", check_paths=False).data
    assert config.output.run_name == f"{name}-qwen2.5-0.5b" and not config.compare


@pytest.mark.parametrize("name", sorted(SHARED_DIR))
def test_paper_input_lengths_cover_99_percent_of_the_real_inputs(name):
    """The measurement the presets' comments name, redone where the authors' files are (opt-in): words x 1.3
    of the student's longest-prefix input."""
    if not (SHARED_DATA / SHARED_DIR[name]).is_dir():
        pytest.skip(f"no shared data at {SHARED_DATA / SHARED_DIR[name]}")
    from tinyllm_ray.data.official import read_official
    from tinyllm_ray.prompts import student_input

    data = read_official(SHARED_DATA / SHARED_DIR[name])
    questions = [r.question for rows in data.rows.values() for r in rows if r.question is not None]
    assert len(questions) > 1000
    tokens = [math.ceil(1.3 * len(re.findall(r"\S+", student_input(q, "llama-2-chat")))) for q in questions]
    limit = INPUT_TOKENS[name]
    assert sum(n <= limit for n in tokens) / len(tokens) >= 0.99
    assert sum(n <= limit // 2 for n in tokens) / len(tokens) < 0.99  # and not far more than needed


def test_precomputed_switch_from_the_preset_header():
    config = load_config(CONFIGS / "paper" / "obqa.yaml", ["data.path=/data/obqa", "data.rationales=precomputed",
                                                            "teachers=[]"], check_paths=False)
    assert config.teacher_names() == ["flan-t5-xl", "llama-2-chat"]
    assert list(config.task_weights()) == ["answer", "flan-t5-xl", "llama-2-chat"]


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    (tmp_path / "base.yaml").write_text("student: {model: a, max_input_tokens: 64}\nteachers: [{name: x, model: m}]\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nstudent: {model: b}\nteachers: []\n")
    config = load_config(tmp_path / "child.yaml", check_paths=False)
    assert (config.student.model, config.student.max_input_tokens, config.teachers) == ("b", 64, [])


def test_extends_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml", check_paths=False)
    (tmp_path / "c.yaml").write_text("extends: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"nope.yaml.*extended by"):
        load_config(tmp_path / "c.yaml", check_paths=False)
