"""``tinyllm distill --dry-run`` (dry_run.py) and its cost model (estimate.py): the plan of a run, with no model
loaded and nothing written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_run_config
from tinyllm_ray import cli, dry_run, estimate
from tinyllm_ray.config import TeacherConfig, from_dict
from tinyllm_ray.resources import NodeType


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def poisoned_models(tiny_models, tmp_path) -> Path:
    """Copies of the tiny models whose weight files are garbage: loading any of them would fail."""
    out = tmp_path / "models"
    for name in ("teacher-a", "teacher-b", "student-t5"):
        shutil.copytree(tiny_models / name, out / name)
        weights = list((out / name).glob("*.safetensors")) + list((out / name).glob("*.bin"))
        assert weights
        for w in weights:
            w.write_bytes(b"not weights")
    return out


def test_dry_run_loads_no_model_and_writes_nothing_but_the_plan(poisoned_models, tiny_models, tmp_path, capsys):
    runs = tmp_path / "runs"
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(tiny_run_config(poisoned_models, runs, "dry", compare=True)))
    before = _tree(tmp_path)

    assert cli.main(["distill", "--config", str(config_file), "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)

    assert _tree(tmp_path) == before  # no run dir, no rejects file, no model file touched
    assert not runs.exists()
    assert planned["resume"] is False and planned["data"] == {"dataset": "synthetic", "task": "choice", "scorer": "choice", "train": 48, "valid": 16,
                                                              "test": 16, "rejected": 0}
    a, b = planned["teachers"]
    assert a["to_generate"] == {"train": 48, "valid": 16, "test": 16} and not a["reused"]
    assert a["new_tokens"] == (48 + 16 + 16) * 12  # max_new_tokens: nothing stored to measure from
    assert a["placement"].startswith("side by side") and b["placement"].startswith("side by side")
    student = planned["student"]
    assert student["arms"] == ["student", "label-only", "only-teacher-a", "only-teacher-b"]
    assert student["steps"] == 3  # 48 questions, batch 16, one epoch
    # Sizes are counted from config.json on the meta device: the same count as the real (here: healthy) model.
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    real = AutoModelForCausalLM.from_pretrained(tiny_models / "teacher-a")
    assert a["params"] == sum(p.numel() for p in real.parameters())
    assert a["params_from"] == "counted from its config.json"
    real = AutoModelForSeq2SeqLM.from_pretrained(tiny_models / "student-t5")
    assert student["params"] == sum(p.numel() for p in real.parameters())
    assert a["gpu_hours"] is None and planned["total"]["gpu_hours"] is None  # CPU teachers, CPU student

    assert cli.main(["distill", "--config", str(config_file), "--dry-run"]) == 0  # the console form
    text = capsys.readouterr().out
    assert "to generate 80 rows (train 48, valid 16, test 16)" in text
    assert "4 to train (student, label-only, only-teacher-a, only-teacher-b)" in text
    assert _tree(tmp_path) == before


def test_dry_run_of_a_config_with_tiny_models_to_build_builds_none(tmp_path, capsys):
    config_file = tmp_path / "run.yaml"
    raw = tiny_run_config(tmp_path / "tiny", tmp_path / "runs", "dry")
    raw["tiny_models"] = str(tmp_path / "tiny")
    config_file.write_text(yaml.safe_dump(raw))
    assert cli.main(["distill", "--config", str(config_file), "--dry-run", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["tiny_models_to_build"] == sorted(str(tmp_path / "tiny" / n)
                                                     for n in ("student-t5", "teacher-a", "teacher-b"))
    assert sorted(os.listdir(tmp_path)) == ["run.yaml"]


def test_dry_run_refuses_what_a_run_refuses(poisoned_models, tmp_path, capsys):
    config_file = tmp_path / "run.yaml"
    raw = tiny_run_config(poisoned_models, tmp_path / "runs", "dry")
    raw["teachers"][0]["shots"] = 300  # more examples than training questions: the run refuses it
    config_file.write_text(yaml.safe_dump(raw))
    assert cli.main(["distill", "--config", str(config_file), "--dry-run"]) == 2
    assert "teachers.0.shots" in capsys.readouterr().err
    raw["teachers"][0]["shots"] = 2
    config_file.write_text(yaml.safe_dump(raw))
    for bad in ("teacher-a=fast", "teacher-a=-5", "teacher-a", "nobody=100"):
        assert cli.main(["distill", "--config", str(config_file), "--dry-run", "--throughput", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --throughput") and err.count("\n") <= 2, err


def test_a_measured_throughput_replaces_the_estimate(poisoned_models, tmp_path):
    config = from_dict(tiny_run_config(poisoned_models, tmp_path / "runs", "dry"))
    planned = dry_run.make_plan(config, {"teacher-a": 40.0, "student": 1000.0})
    a, b = planned["teachers"]
    assert a["wall_hours"] == pytest.approx(a["new_tokens"] / 40.0 / 3600)
    assert b["wall_hours"] is None  # a CPU teacher without a figure: no estimate
    s = planned["student"]
    assert s["gpu_hours"] == pytest.approx(s["trained_tokens"] / 1000.0 / 3600)


IN_TURN = "in turn: starts when a teacher before it ends"


def _teacher(name: str, gpus: float, replicas: int) -> TeacherConfig:
    return TeacherConfig(name=name, model="m", num_gpus=gpus, replicas=replicas)


@pytest.mark.parametrize(("nodes", "expected"), [
    ([NodeType("big", {"CPU": 64, "GPU": 8})], ["side by side: 2 on big", "side by side: 2 on big"]),
    ([NodeType("gpu", {"CPU": 16, "GPU": 4}, max_count=2)], ["side by side: 2 on gpu", "side by side: 2 on gpu"]),
    ([NodeType("small", {"CPU": 16, "GPU": 4})], ["side by side: 2 on small", IN_TURN]),
    ([NodeType("tiny", {"CPU": 16, "GPU": 1})], ["does not fit on this cluster", "does not fit on this cluster"]),
])
def test_teachers_are_placed_side_by_side_while_they_fit(nodes, expected):
    configs = [_teacher("a", 2, 2), _teacher("b", 2, 2)]
    out = [{"reused": False}, {"reused": False}]
    dry_run.place(configs, out, nodes)
    assert [o["placement"] for o in out] == expected


def test_the_roofline_reproduces_the_published_vllm_figure():
    # docs/capacity.md: ~12,500 generated tokens/s for Llama-3.1-8B with vLLM on one H100.
    assert estimate.published_throughput()["llama_3_1_8b_h100_tokens_per_s"] == pytest.approx(12_500, rel=0.05)
    vllm = estimate.teacher_seconds(8e9, 1, "vllm", 0, 1_000_000)
    assert estimate.teacher_seconds(8e9, 1, "hf", 0, 1_000_000) == pytest.approx(vllm * estimate.HF_SLOWDOWN)
    assert estimate.teacher_seconds(8e9, 2, "vllm", 0, 1_000_000) == pytest.approx(vllm / 2)
    assert estimate.teacher_seconds(8e9, 0, "vllm", 0, 1_000_000) is None  # CPUs: no roofline


@pytest.mark.parametrize(("model", "params"), [
    ("meta-llama/Llama-3.1-8B-Instruct", 8e9), ("Qwen/Qwen2.5-0.5B", 0.5e9), ("TinyLlama/TinyLlama-1.1B-Chat-v1.0",
                                                                                1.1e9),
    ("google/flan-t5-large", 783e6), ("EleutherAI/pythia-160m", 160e6), ("someone/my-model", None),
])
def test_model_sizes_from_names(model, params):
    found, _ = estimate.model_params(model)
    assert found == (pytest.approx(params) if params else None)


# --- the one FLOPs formula (estimate.step_flops): bench/gpu.py's MFU and the dry run's student GPU-hours ---------

def test_step_flops_of_a_t5_shape_match_a_hand_count():
    """d_model 4, d_ff 6 (gated), one head of 2, one layer each side, vocabulary 10; 3 input tokens, 2 target tokens.
    Encoder layer: projections 2*3*4*(2+2+2+2) = 192, scores and weighted sum 2*2*3*3*2 = 72, gated FF 2*3*4*6*3 = 432.
    Decoder layer: self 2*2*4*8 + 2*2*2*2*2 + 2*2*4*6*3 = 448; cross: query and output 2*2*4*4 = 64, keys and values
    over the 3 encoder tokens 2*3*4*4 = 96, scores 2*2*2*3*2 = 48. Head 2*2*4*10 = 160. Training = 3 x forward."""
    config = {"d_model": 4, "d_ff": 6, "d_kv": 2, "num_heads": 1, "num_layers": 1, "num_decoder_layers": 1,
              "vocab_size": 10, "feed_forward_proj": "gated-gelu"}
    shape = estimate.Shape.of(config)
    forward = 192 + 72 + 432 + 448 + 64 + 96 + 48 + 160
    assert estimate.step_flops(shape, 1, 3, [2]) == 3 * forward
    assert estimate.step_flops(shape, 5, 3, [2, 2]) == 5 * 2 * 3 * forward  # rows and tasks scale it
    # one encoder pass for both tasks: the second task's encoder (192 + 72 + 432) is not counted again
    assert estimate.step_flops(shape, 1, 3, [2, 2], one_encoder=True) == 3 * (2 * forward - (192 + 72 + 432))


def test_step_flops_of_a_llama_shape_match_a_hand_count():
    """hidden 4, intermediate 6, 2 query heads and 1 key/value head of 2, one layer, vocabulary 10: a prompt of 3 and
    a target of 2 are 5 tokens through the decoder: projections 2*5*4*(4+2+2+4) = 480, scores 2*2*5*5*4 = 400,
    gated FF 2*5*4*6*3 = 720, head 2*5*4*10 = 400."""
    config = {"hidden_size": 4, "intermediate_size": 6, "num_attention_heads": 2, "num_key_value_heads": 1,
              "head_dim": 2, "num_hidden_layers": 1, "vocab_size": 10}
    assert estimate.step_flops(estimate.Shape.of(config), 1, 3, [2]) == 3 * (480 + 400 + 720 + 400)


def test_the_matrix_products_of_step_flops_are_twice_the_linear_weights_per_token():
    """Against a real model: the projections and feed-forward of a T5 encoder are 2 x its linear weights x tokens
    (attention scores apart)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = {"d_model": 16, "d_ff": 40, "d_kv": 4, "num_heads": 2, "num_layers": 3, "num_decoder_layers": 3,
              "vocab_size": 50, "feed_forward_proj": "gated-gelu"}
    with torch.device("meta"):
        model = T5ForConditionalGeneration(T5Config(**config))
    linear = sum(m.weight.numel() for m in model.encoder.modules() if isinstance(m, torch.nn.Linear))
    shape = estimate.Shape.of(config)
    tokens = 7
    scores = 3 * 2 * 2 * tokens * tokens * shape.q_dim
    assert shape.encoder_layers * shape._layer(tokens, tokens) - scores == 2 * linear * tokens
