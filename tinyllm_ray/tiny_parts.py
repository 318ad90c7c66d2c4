"""What every tiny model is built from: the local BPE tokenizer (trained in-process on a built-in English corpus),
saving a model with its tokenizer, the ``tiny.json`` marker, and the ownership rules of a models folder. The
random-weight models (``tiny``) and the teachers trained on CPU (``tiny_trained``) both build through here."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tinyllm_ray.markers import NotOursError, read_marker

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

MARKER_FILE = "tiny.json"
VOCAB_SIZE = 2000
MODEL_MAX_LENGTH = 1024
PAD, EOS, UNK, BOS = "<pad>", "</s>", "<unk>", "<s>"  # ids 0, 1, 2, 3 in this order
SPECIAL_TOKENS = [PAD, EOS, UNK, BOS]
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
