"""Unit tests for tinyllm_ray.tiny: tiny random models load by path and behave like real ones."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from tinyllm_ray.markers import NotOursError
from tinyllm_ray.tiny import TINY_MODEL_NAMES, build_tiny_models, main
from tinyllm_ray.tiny_parts import MARKER_FILE

TEXT = "Q: Tom has 3 apples. (a) 4 (b) 5"
TEACHERS = ("teacher-a", "teacher-b")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the tiny models once for the whole module."""
    return build_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)


def test_build_returns_all_names(tiny: dict[str, Path]) -> None:
    assert tuple(tiny) == TINY_MODEL_NAMES
    for name, path in tiny.items():
        assert path.name == name and path.is_dir()
        assert (path / MARKER_FILE).is_file()
        assert (path / "model.safetensors").is_file()
        assert (path / "generation_config.json").is_file()
    # no temp dirs left behind
    root = next(iter(tiny.values())).parent
    assert sorted(p.name for p in root.iterdir()) == sorted(TINY_MODEL_NAMES)


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_loads_and_generates_left_padded(tiny: dict[str, Path], name: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny[name])
    model = AutoModelForCausalLM.from_pretrained(tiny[name]).eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.padding_side == "left"
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token_id) == (0, 1, 2, 3)
    assert model.config.vocab_size == len(tok)
    cfg = model.config
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (0, 3, 1)

    batch = tok(["Q: 2 + 2?", TEXT + " Answer:"], padding=True, return_tensors="pt")
    assert batch.input_ids[0, 0].item() == tok.pad_token_id  # short prompt padded on the left
    assert batch.input_ids[1, 0].item() == tok.bos_token_id  # Llama convention: BOS prepended
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape == (2, batch.input_ids.shape[1] + 5)
    assert torch.equal(out[:, : batch.input_ids.shape[1]], batch.input_ids)


def test_teachers_differ(tiny: dict[str, Path]) -> None:
    cfg_a, cfg_b = (AutoConfig.from_pretrained(tiny[n]) for n in TEACHERS)
    assert cfg_a.to_dict() != cfg_b.to_dict()
    shape = ("num_hidden_layers", "hidden_size", "intermediate_size")
    assert [getattr(cfg_a, k) for k in shape] != [getattr(cfg_b, k) for k in shape]


@pytest.mark.parametrize("name", TEACHERS)
def test_teacher_head_dim_at_least_32(tiny: dict[str, Path], name: str) -> None:
    cfg = AutoConfig.from_pretrained(tiny[name])
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    assert head_dim >= 32
    assert cfg.hidden_size == head_dim * cfg.num_attention_heads
    assert cfg.max_position_embeddings == 1024


def test_student_t5_loss_and_generate(tiny: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(tiny["student-t5"])
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny["student-t5"])
    assert type(model).__name__ == "T5ForConditionalGeneration"
    assert tok.padding_side == "right"
    assert model.config.d_kv == 32 and model.config.vocab_size == len(tok)
    assert model.config.decoder_start_token_id == 0

    enc = tok(["predict: " + TEXT, "explain_teacher-a: " + TEXT], padding=True, return_tensors="pt")
    assert enc.input_ids[1, -1].item() == tok.eos_token_id  # T5 convention: EOS appended
    assert enc.input_ids[0, -1].item() == tok.pad_token_id  # shorter row padded on the right
    labels = tok(["(a)", "Tom has 3 apples, so 4."], padding=True, return_tensors="pt").input_ids
    labels[labels == tok.pad_token_id] = -100
    out = model(**enc, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()  # trainable

    model.eval()
    with torch.no_grad():
        gen = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert gen.shape[0] == 2 and 1 < gen.shape[1] <= 5
    assert (gen[:, 0] == model.config.decoder_start_token_id).all()


@pytest.mark.parametrize("name", TINY_MODEL_NAMES)
def test_tokenizer_round_trip(tiny: dict[str, Path], name: str) -> None:
    tok = AutoTokenizer.from_pretrained(tiny[name])
    assert 1000 <= len(tok) <= 2000
    assert tok.model_max_length == 1024
    for text in (TEXT, "Explanation: héllo wörld, 日本 🙂!"):
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids  # byte-level: no unknowns
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_second_build_is_noop(tiny: dict[str, Path]) -> None:
    root = next(iter(tiny.values())).parent
    mtimes = {n: (p / MARKER_FILE).stat().st_mtime_ns for n, p in tiny.items()}
    start = time.perf_counter()
    again = build_tiny_models(root, seed=0)
    assert time.perf_counter() - start < 0.5
    assert again == tiny
    assert {n: (p / MARKER_FILE).stat().st_mtime_ns for n, p in again.items()} == mtimes


def test_same_seed_identical_weights(tiny: dict[str, Path], tmp_path: Path) -> None:
    other = build_tiny_models(tmp_path / "copy", seed=0)
    for name in TINY_MODEL_NAMES:
        a = load_file(tiny[name] / "model.safetensors")
        b = load_file(other[name] / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
        tok_json = (tiny[name] / "tokenizer.json").read_text()
        assert tok_json == (other[name] / "tokenizer.json").read_text()


def test_a_build_of_another_seed_is_rebuilt(tiny: dict[str, Path], tmp_path: Path) -> None:
    shutil.copytree(tiny["teacher-a"], tmp_path / "teacher-a")  # our own build, seed 0
    paths = build_tiny_models(tmp_path, seed=7)
    assert json.loads((paths["teacher-a"] / MARKER_FILE).read_text())["seed"] == 7
    AutoModelForCausalLM.from_pretrained(paths["teacher-a"])
    a = load_file(tiny["teacher-a"] / "model.safetensors")
    b = load_file(paths["teacher-a"] / "model.safetensors")
    assert not all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", TINY_MODEL_NAMES)
def test_a_users_own_model_dir_in_the_way_is_refused_untouched(tmp_path: Path, name: str) -> None:
    """Issue #16: a folder of the user's where a tiny model would go was deleted and replaced."""
    mine = tmp_path / name
    mine.mkdir()
    (mine / "config.json").write_text('{"mine": true}')
    (mine / "weights.bin").write_bytes(b"precious")
    with pytest.raises(NotOursError, match=rf"{name} exists and was not built by tinyllm"):
        build_tiny_models(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing built beside it either
    assert sorted(p.name for p in mine.iterdir()) == ["config.json", "weights.bin"]
    assert (mine / "weights.bin").read_bytes() == b"precious"


def test_a_file_where_the_models_go_is_refused(tmp_path: Path) -> None:
    (tmp_path / "models").write_text("mine")
    with pytest.raises(NotOursError, match="not a directory"):
        build_tiny_models(tmp_path / "models")
    assert (tmp_path / "models").read_text() == "mine"


def test_cli_main(tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = next(iter(tiny.values())).parent
    assert main([str(root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == list(TINY_MODEL_NAMES)
