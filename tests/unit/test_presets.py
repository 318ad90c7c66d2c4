"""Every shipped config loads, and ``extends`` merges presets the way the README says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyllm_ray.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PRESETS = sorted(p for p in CONFIGS.rglob("*.yaml") if not p.name.startswith("_"))
PAPER = ("obqa", "arc", "piqa", "riddlesense", "pubmedqa", "bioasq")


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_preset_loads_and_names_its_command(path):
    config = load_config(path, check_paths=False)
    assert path.read_text().startswith(f"# python jobs/distill.py --config configs/{path.relative_to(CONFIGS)}")
    assert config.output.run_name


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets_have_the_teacher_set_and_three_student_sizes(name):
    for suffix, size in (("", "base"), ("-small", "small"), ("-large", "large")):
        config = load_config(CONFIGS / "paper" / f"{name}{suffix}.yaml", check_paths=False)
        assert [t.name for t in config.teachers] == ["flan-t5-xl", "llama-2-chat", "vicuna"]
        assert all(t.num_gpus == 1 for t in config.teachers)
        assert config.student.model == f"google/flan-t5-{size}"
        assert config.output.run_name == f"{name}-flan-t5-{size}"
        assert config.train.use_gpu


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
