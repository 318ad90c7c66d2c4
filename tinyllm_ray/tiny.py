"""Tiny random-weight models for tests, CI and laptop runs of tinyllm_ray.

Builds two small Llama-style causal teachers (``teacher-a``, ``teacher-b``) and a small T5
student (``student-t5``) with random weights, plus a byte-level BPE tokenizer trained
in-process on a built-in English corpus. Everything is written with ``save_pretrained`` so every
engine loads them by path exactly like real checkpoints (``AutoTokenizer.from_pretrained(path)``,
``AutoModelForCausalLM`` / ``AutoModelForSeq2SeqLM.from_pretrained(path)``). No network is used.

Run it with ``tinyllm tiny-models DIR [--random-only]`` or ``python -m tinyllm_ray.tiny DIR [--seed N]
[--trained]``; from Python call ``build_tiny_models(DIR)`` (``trained=True``: also the two teachers trained
on CPU by ``tinyllm_ray.tiny_trained``, ``skilled-a`` and ``skilled-b``, through the same build and marker
code). Builds are seeded, atomic (temp sibling dir + rename) and idempotent: a model dir whose ``tiny.json``
marker matches the recipe and seed is left alone, one of another recipe or seed is rebuilt, and anything else
in the way (no marker: a user's own model) is refused.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tinyllm_ray.tiny_parts import (
    MODEL_MAX_LENGTH,
    _build_one,
    _is_complete,
    check_root,
    save_model,
    train_tokenizer,
    wrap_tokenizer,
)

# torch/transformers are imported inside the builders so a no-op (already built) call stays cheap.
if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM, T5ForConditionalGeneration

TINY_MODEL_NAMES: tuple[str, ...] = ("teacher-a", "teacher-b", "student-t5")
RECIPE_VERSION = 1

# Teacher shapes: head_dim = hidden / heads = 32 (vLLM's CPU attention kernel rejects 16).
_TEACHER_SHAPES: dict[str, dict[str, int]] = {
    "teacher-a": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2},
    "teacher-b": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 3},
}









def _teacher(name: str, vocab_size: int) -> LlamaForCausalLM:
    """A tiny random ``LlamaForCausalLM`` with the shape recipe for ``name``."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=MODEL_MAX_LENGTH,
        pad_token_id=0,
        bos_token_id=3,
        eos_token_id=1,
        tie_word_embeddings=True,
        **_TEACHER_SHAPES[name],
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        max_new_tokens=32, do_sample=False, pad_token_id=0, bos_token_id=3, eos_token_id=1
    )
    return model


def _student(vocab_size: int) -> T5ForConditionalGeneration:
    """A tiny random ``T5ForConditionalGeneration``."""
    from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=vocab_size,
        d_model=64,
        d_ff=128,
        d_kv=32,
        num_heads=2,
        num_layers=2,
        num_decoder_layers=2,
        relative_attention_num_buckets=32,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=True,
    )
    model = T5ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        max_new_tokens=32, do_sample=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0
    )
    return model


def _marker(name: str, seed: int) -> dict[str, object]:
    """The ``tiny.json`` content identifying a finished build of ``name`` from base ``seed``."""
    return {"recipe": RECIPE_VERSION, "name": name, "seed": seed}






def _save(path: Path, name: str, seed: int, base_tok: Tokenizer) -> None:
    """Write model ``name`` (weights, configs, tokenizer) into the empty dir ``path``.

    Model ``i`` of ``TINY_MODEL_NAMES`` is initialised right after ``torch.manual_seed(seed + i)``.
    """
    import torch

    seq2seq = name == "student-t5"
    tokenizer = wrap_tokenizer(base_tok, seq2seq=seq2seq)
    torch.manual_seed(seed + TINY_MODEL_NAMES.index(name))
    model = _student(len(tokenizer)) if seq2seq else _teacher(name, len(tokenizer))
    save_model(path, model, tokenizer)








def build_tiny_models(out_dir: str | os.PathLike[str], seed: int = 0, trained: bool = False,
                      trained_steps: int | None = None) -> dict[str, Path]:
    """Build (or reuse) the tiny models under ``out_dir``; return ``{name: model_dir}``.

    Each model dir holds safetensors weights, config, generation config, its tokenizer and a
    ``tiny.json`` marker (written last). The same ``seed`` gives identical weights; the teachers
    differ in seed and size. Dirs already holding this recipe and seed are not rebuilt.
    With ``trained`` the two teachers trained on CPU (``tinyllm_ray.tiny_trained``: minutes on the
    first call) are built too, ``trained_steps`` of them (default: the recipe's).
    """
    root = Path(out_dir)
    names: tuple[str, ...] = TINY_MODEL_NAMES
    if trained:
        from tinyllm_ray.tiny_trained import TRAINED_TEACHERS

        names += TRAINED_TEACHERS
    check_root(root, names)
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    base_tok: Tokenizer | None = None
    for name in TINY_MODEL_NAMES:
        if _is_complete(root / name, _marker(name, seed)):
            paths[name] = root / name
            continue
        if base_tok is None:
            base_tok = train_tokenizer()
        paths[name] = _build_one(root, name, _marker(name, seed),
                                 lambda path, n=name, tok=base_tok: _save(path, n, seed, tok))
    if trained:
        from tinyllm_ray.tiny_trained import build_trained_teachers

        paths.update(build_trained_teachers(root, seed=seed, steps=trained_steps, base_tok=base_tok))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m tinyllm_ray.tiny DIR [--seed N] [--trained]``; prints ``name<TAB>path`` per model.

    Random-weight models only unless ``--trained`` (``tinyllm tiny-models DIR`` builds the trained teachers
    too unless ``--random-only``)."""
    parser = argparse.ArgumentParser(
        prog="python -m tinyllm_ray.tiny",
        description="Build tiny random-weight models and tokenizers (and with --trained the two tiny teachers "
                    "trained on CPU).",
    )
    parser.add_argument("out_dir", type=Path, help="directory to create the tiny models in")
    parser.add_argument("--seed", type=int, default=0, help="base seed for the weights")
    parser.add_argument("--trained", action="store_true",
                        help="also build (or reuse) the teachers trained on CPU (minutes on the first call)")
    args = parser.parse_args(argv)
    if args.trained:  # the build logs its progress
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name, path in build_tiny_models(args.out_dir, seed=args.seed, trained=args.trained).items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
