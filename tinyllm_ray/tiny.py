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
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tinyllm_ray.stages import NotOursError, read_marker

# torch/transformers are imported inside the builders so a no-op (already built) call stays cheap.
if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast, T5ForConditionalGeneration

TINY_MODEL_NAMES: tuple[str, ...] = ("teacher-a", "teacher-b", "student-t5")
RECIPE_VERSION = 1
MARKER_FILE = "tiny.json"
VOCAB_SIZE = 2000
MODEL_MAX_LENGTH = 1024
PAD, EOS, UNK, BOS = "<pad>", "</s>", "<unk>", "<s>"  # ids 0, 1, 2, 3 in this order
SPECIAL_TOKENS = [PAD, EOS, UNK, BOS]

# Teacher shapes: head_dim = hidden / heads = 32 (vLLM's CPU attention kernel rejects 16).
_TEACHER_SHAPES: dict[str, dict[str, int]] = {
    "teacher-a": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2},
    "teacher-b": {"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 3},
}

_WORDS = (
    "the a an and or but if then so because of to in on at by for with from into about over under "
    "is are was were be been has have had do does did will would can could should may might must "
    "i you he she it we they me him her us them my your his its our their this that these those "
    "what which who whom whose when where why how yes no not true false all some many more most "
    "few less least each every both either neither one two three four five six seven eight nine "
    "ten "
    "first second third last next time day year people man woman child world life hand part place "
    "number answer question reason explain because therefore thus since step total left right "
    "give take make get go come see know think say tell ask find use work call try need feel "
    "buy sell eat drink run walk read write play count add subtract multiply divide equals"
).split()
_NAMES = "Tom Anna Maria John Alice Bob Sarah James Emma Liam Olivia Noah Mia Lucas Zoe Ben".split()
_OBJECTS = (
    "apples oranges bananas books pens pencils cars dogs cats birds coins cookies cakes boxes "
    "balls chairs tables cups bottles shoes hats toys marbles stickers candies flowers trees"
).split()
_ADJECTIVES = "big small tall short fast slow heavy light old young hot cold long".split()
_COMPARATIVES = (
    "bigger smaller taller shorter faster slower heavier lighter older younger hotter colder "
    "longer more less better worse"
).split()
_PROMPT_PHRASES = (
    "Q:", "A:", "Answer:", "Explanation:", "Options:", "Question:", "Context:", "Rationale:",
    "The answer is", "(a)", "(b)", "(c)", "(d)", "(e)", "True", "False", "Yes", "No",
)
_TASK_PREFIXES = ("predict:", "explain_teacher-a:", "explain_teacher-b:", "explain:")
_PUNCT = list(".,;:!?'\"()[]{}-+*/=%$#@&_<>") + ["...", "--"]


def _corpus(n_lines: int = 3000, seed: int = 1234) -> Iterator[str]:
    """Yield a deterministic English-like training corpus for the tiny tokenizer."""
    rng = random.Random(seed)
    yield " ".join(_WORDS + _NAMES + _OBJECTS + _ADJECTIVES + _COMPARATIVES)
    yield " ".join(_PROMPT_PHRASES + _TASK_PREFIXES) + " " + " ".join(_PUNCT)
    yield " ".join(str(i) for i in range(1000))
    for _ in range(n_lines):
        name, other = rng.sample(_NAMES, 2)
        obj, adj, comp = rng.choice(_OBJECTS), rng.choice(_ADJECTIVES), rng.choice(_COMPARATIVES)
        x, y = rng.randrange(1000), rng.randrange(1000)
        filler = " ".join(rng.choices(_WORDS, k=rng.randint(3, 10)))
        opts = " ".join(f"({c}) {rng.randrange(1000)}" for c in "abcd"[: rng.randint(2, 4)])
        yield rng.choice(
            [
                f"Q: {name} has {x} {obj}. {other} gives {name} {y} more. How many {obj} now?",
                f"Answer: {x + y}. Explanation: {x} + {y} = {x + y}, so the answer is {x + y}.",
                f"Question: Is {name} {comp} than {other}? Options: {opts}",
                f"predict: {filler}? Options: {opts} Answer: (a)",
                f"{rng.choice(_TASK_PREFIXES)} The {adj} {obj} is {comp} than the rest.",
                f"{name} said, \"{filler.capitalize()}!\" {rng.choice(_PUNCT)} {y}%",
                filler.capitalize() + rng.choice([".", "?", "!", ";", ","]),
            ]
        )


def train_tokenizer() -> Tokenizer:
    """Train the shared byte-level BPE; ``<pad>``, ``</s>``, ``<unk>``, ``<s>`` get ids 0-3."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    if [tok.token_to_id(t) for t in SPECIAL_TOKENS] != [0, 1, 2, 3]:
        raise RuntimeError("special tokens did not get ids 0-3")
    return tok


def wrap_tokenizer(tok: Tokenizer, *, seq2seq: bool) -> PreTrainedTokenizerFast:
    """Wrap a copy of ``tok`` for one model family.

    T5 convention: append ``</s>`` and pad on the right. Llama convention: prepend ``<s>`` and
    pad on the left (batched generation).
    """
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer.from_str(tok.to_str())
    template = f"$A {EOS}" if seq2seq else f"{BOS} $A"
    pair = f"$A {EOS} $B {EOS}" if seq2seq else f"{BOS} $A $B"
    specials = [(EOS, 1)] if seq2seq else [(BOS, 3)]
    tok.post_processor = processors.TemplateProcessing(
        single=template, pair=pair, special_tokens=specials
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        bos_token=BOS,
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="right" if seq2seq else "left",
        clean_up_tokenization_spaces=False,
    )


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


def _is_complete(path: Path, marker: dict[str, object]) -> bool:
    """True if ``path`` holds a finished build whose marker equals ``marker``."""
    return read_marker(path, MARKER_FILE) == marker


def _check_ours(path: Path, name: str) -> None:
    """Refuse a ``path`` in the way that this module did not build: a build of any recipe or seed carries a
    ``tiny.json`` naming its model; anything else (a user's own model, a file) is never replaced."""
    if not os.path.lexists(path):
        return
    marker = read_marker(path, MARKER_FILE) if path.is_dir() and not path.is_symlink() else None
    if not (marker and marker.get("name") == name and "recipe" in marker):
        raise NotOursError(f"{path} exists and was not built by tinyllm (no {MARKER_FILE} for {name!r}); "
                           f"move it away or build the tiny models into another directory")


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


def save_model(path: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> None:
    """``save_pretrained`` of ``model`` and ``tokenizer`` into ``path``, loadable by transformers 4.x and 5.x."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # silence "Writing model shards" for a 1 MB file
    try:
        model.save_pretrained(path)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(path)
    # transformers 5 records its internal class name "TokenizersBackend", which 4.x (e.g. the one
    # pinned by vLLM) cannot resolve; "PreTrainedTokenizerFast" loads the same files in both.
    tok_cfg_path = path / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")


def _build_one(out_dir: Path, name: str, marker: dict[str, object], save: Callable[[Path], None]) -> Path:
    """Build model ``name`` with ``save`` (which fills an empty dir) into a temp sibling dir, write ``marker``
    last, rename into place. Every tiny model, random or trained, is built through here."""
    final = out_dir / name
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out_dir))
    try:
        tmp.chmod(0o755)  # mkdtemp makes 0700; other users/containers may need to read it
        save(tmp)
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        if final.exists() and not _is_complete(final, marker):
            _check_ours(final, name)  # checked before the build too; a concurrent writer may have come since
            shutil.rmtree(final)  # our own build of another recipe or seed: replace it
        try:
            os.replace(tmp, final)
        except OSError:
            if not _is_complete(final, marker):  # only a concurrent builder's win is fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def check_root(root: Path, names: Sequence[str]) -> None:
    """Refuse ``root`` when it is not a directory, or when any of ``names`` in it is not ours: all checked
    before anything is built or written."""
    if os.path.lexists(root) and not root.is_dir():
        raise NotOursError(f"{root} is not a directory; the tiny models need a directory of their own")
    for name in names:
        _check_ours(root / name, name)


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
