"""Tiny teachers that know something: two small Llama models trained on CPU on the built-in synthetic data.

``tinyllm_ray.tiny``'s random-weight teachers exercise the workflow's mechanics, but their rationales carry no
signal. The two teachers built here (``skilled-a``, ``skilled-b``: ``TRAINED_TEACHERS``) are trained on CPU on
the reference rationales of the synthetic generator (``tinyllm_ray.data.synthetic``), each on a *different pair*
of problem families (``TEACHER_FAMILIES``), so they have different strengths: ``skilled-a`` answers ``change``
questions well above chance, ``skilled-b`` ``arithmetic`` ones, and neither answers the other's families at all.
Each sees both prompts the workflow gives a teacher (``prompts.teacher_prompt``: explain the gold answer;
``prompts.answer_prompt``: answer by itself), without in-context examples, and learns to write the reference
rationale (ending ``The answer is X.``) and stop. Run them with ``shots: 0`` (trained so; with 2 examples in the
prompt they fall below chance) and ``max_new_tokens`` of at least 80 (the longest rationale is ~78 tokens).

Measured (seed 0, 0 shots, the 640 valid + test questions of data seeds 0-4; chance = mean 1 / options):
``skilled-a`` change 0.49 (chance 0.32), days 0.39 (0.34), arithmetic 0.01, ordering 0.00; ``skilled-b``
arithmetic 0.52 (0.31), ordering 0.27 (0.34), change 0.01, days 0.00. A 4 x 128 model learns the rationales'
wording within a few hundred steps, then copying the numbers, then (slowly) the arithmetic; the weekday lookup
and, most of all, sorting the ``ordering`` clues need far more than this budget. Training takes ~10 minutes per
teacher on 2 free cores (3,000 steps of 8 examples); the first ~750 steps (~150 s) leave every family below
chance.

Training questions come from the generator with a seed of their own (``DATA_SEED``) and never include a valid or
test question of the quickstart's data seeds 0-4 or of the benches (``HELD_OUT_SPLITS``). Training is a plain
PyTorch loop (AdamW, warm-up then linear decay, loss on the rationale tokens only, the pair's families taking
turns, batches of similar length) for a fixed number of steps, so a build is the same for the same seed on the
same machine. Builds share ``tinyllm_ray.tiny``'s tokenizer, atomic build, ``tiny.json`` marker (here with the
recipe version, seed, steps and families) and ownership rules; ``build_tiny_models(DIR, trained=True)`` or
``tinyllm tiny-models DIR`` build them. ``family_accuracy`` measures a teacher's own accuracy per family with the
answering prompt (``tinyllm_ray.tiny_skill``, whose ``python -m tinyllm_ray.tiny_skill DIR`` builds or reuses both
teachers and prints it against chance).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tinyllm_ray import prompts
from tinyllm_ray.data import synthetic
from tinyllm_ray.data.schema import Question
from tinyllm_ray.tiny_parts import (
    MODEL_MAX_LENGTH,
    _build_one,
    _is_complete,
    check_root,
    save_model,
    train_tokenizer,
    wrap_tokenizer,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

log = logging.getLogger("tinyllm_ray.tiny")

TRAINED_TEACHERS: tuple[str, ...] = ("skilled-a", "skilled-b")
# Which families each teacher is trained on (and so knows); together they cover all four.
TEACHER_FAMILIES: dict[str, tuple[str, ...]] = {
    "skilled-a": ("change", "days"),
    "skilled-b": ("arithmetic", "ordering"),
}
TRAINED_RECIPE_VERSION = 1
DATA_SEED = 7919  # the training questions' own seed; users and benches use 0-4
# (n_train, n_valid, n_test, seed) of the ``synthetic.generate`` calls whose valid and test questions the
# teachers never see: the quickstart's sizes for data seeds 0-4, and the benches' (rationale_gain, tune, student).
HELD_OUT_SPLITS: tuple[tuple[int, int, int, int], ...] = tuple((256, 64, 64, s) for s in range(5)) + (
    (512, 128, 256, 0),
    (128, 256, 64, 0),
    (256, 64, 16, 0),
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a trained teacher is built (changing a value here means bumping ``TRAINED_RECIPE_VERSION``)."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4  # head_dim 32: vLLM's CPU attention kernel rejects 16
    steps: int = 3000
    batch_size: int = 8  # per example, 8 learnt faster than 16 (and 16 than 32), at the same cost per example
    lr: float = 3e-3  # 6e-3 was no better
    warmup_steps: int = 40
    weight_decay: float = 0.0
    # In-context examples per training prompt, drawn uniformly. 0 only: 0-2 examples cost ~1.5x the compute per
    # example and, at equal compute, left the teachers below chance with 0 and with 2 examples.
    shots: tuple[int, ...] = (0,)
    answer_share: float = 0.5  # share of answering prompts; the rest are rationale (gold-answer) prompts
    max_tokens: int = 448  # prompt + rationale; a longer example drops in-context examples until it fits
    questions_per_family: int = 4000  # fewer for a family with fewer unseen texts (_FAMILY_SIZE)
    shot_pool: int = 1000  # all-family questions the in-context examples are drawn from
    max_new_tokens: int = 96  # the saved generation config's default (the longest rationale is ~78 tokens)


RECIPE = Recipe()


def _marker(name: str, seed: int, steps: int) -> dict[str, object]:
    return {"recipe": TRAINED_RECIPE_VERSION, "name": name, "seed": seed, "steps": steps,
            "families": list(TEACHER_FAMILIES[name])}


def held_out_texts() -> set[str]:
    """Question texts of the valid and test splits of ``HELD_OUT_SPLITS``: never trained on."""
    out: set[str] = set()
    for n_train, n_valid, n_test, seed in HELD_OUT_SPLITS:
        splits = synthetic.generate(n_train, n_valid, n_test, seed=seed)
        out |= {q.question for q in splits["valid"] + splits["test"]}
    return out


# ``days`` has 406 question texts in all; 212 are held out, so 194 are left to train on.
_FAMILY_SIZE = {"days": 180}


def training_questions(name: str, seed: int = 0, recipe: Recipe = RECIPE, exclude: set[str] | None = None,
                       families: Sequence[str] | None = None) -> list[Question]:
    """The questions teacher ``name`` learns from: its ``families`` (default ``TEACHER_FAMILIES[name]``)
    only, none held out."""
    exclude = held_out_texts() if exclude is None else exclude
    out: list[Question] = []
    for i, family in enumerate(TEACHER_FAMILIES[name] if families is None else families):
        n = min(recipe.questions_per_family, _FAMILY_SIZE.get(family, recipe.questions_per_family))
        out += synthetic.generate_families(n, [family], seed=DATA_SEED + 1000 * seed + 10 * i + 1,
                                           exclude=exclude, prefix=f"{name}-{family}")
    return out


def shot_pool(seed: int = 0, recipe: Recipe = RECIPE, exclude: set[str] | None = None) -> list[Question]:
    """All-family questions (none held out) shown as in-context examples in training, as the run's would be."""
    exclude = held_out_texts() if exclude is None else exclude
    return synthetic.generate_families(recipe.shot_pool, list(synthetic.FAMILIES), seed=DATA_SEED + 1000 * seed,
                                       exclude=exclude, prefix="shot")


def _draw_shots(rng: random.Random, q: Question, pool: Sequence[Question], k: int) -> list[Question]:
    drawn = rng.sample(list(pool), k + 1) if k else []
    return [s for s in drawn if s.question != q.question][:k]


def training_examples(name: str, seed: int, steps: int, tokenizer: PreTrainedTokenizerFast,
                      recipe: Recipe = RECIPE, families: Sequence[str] | None = None,
                      ) -> list[list[tuple[list[int], int]]]:
    """``steps`` batches of (token ids, prompt length): prompt + ``" " + reference rationale`` + EOS.

    Deterministic for (name, seed, steps); a batch holds examples of similar length.
    """
    exclude = held_out_texts()
    questions = training_questions(name, seed, recipe, exclude, families)
    pool = shot_pool(seed, recipe, exclude)
    rng = random.Random(f"tiny-trained:{seed}:{name}")
    n = steps * recipe.batch_size
    by_family: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        by_family[synthetic.family_of(q)].append(q)
    # The families take turns (``days`` has far fewer questions than the others but as many examples); each
    # family's questions come in epochs, each epoch in a fresh order.
    queues: dict[str, list[Question]] = {f: [] for f in by_family}
    order: list[Question] = []
    for i in range(n):
        family = list(by_family)[i % len(by_family)]
        if not queues[family]:
            queues[family] = list(by_family[family])
            rng.shuffle(queues[family])
        order.append(queues[family].pop())
    drafts = []
    for q in order:
        k = rng.choice(recipe.shots)
        shots = _draw_shots(rng, q, pool, k)
        answering = rng.random() < recipe.answer_share
        drafts.append((q, shots, answering))

    def prompt(q: Question, shots: Sequence[Question], answering: bool) -> str:
        return prompts.answer_prompt(q, shots) if answering else prompts.teacher_prompt(q, shots)

    prompt_ids = tokenizer([prompt(*d) for d in drafts])["input_ids"]
    target_ids = tokenizer([" " + d[0].reference_rationale for d in drafts], add_special_tokens=False)["input_ids"]
    examples = []
    for (q, shots, answering), p, t in zip(drafts, prompt_ids, target_ids):
        t = t + [tokenizer.eos_token_id]
        while len(p) + len(t) > recipe.max_tokens and shots:  # drop examples, the last first, as a run does
            shots = shots[:-1]
            p = tokenizer(prompt(q, shots, answering))["input_ids"]
        if len(p) + len(t) > recipe.max_tokens:
            raise ValueError(f"a training example needs {len(p) + len(t)} tokens > max_tokens {recipe.max_tokens}")
        examples.append((p + t, len(p)))
    # Similar lengths share a batch: sort within chunks of 64 batches, then shuffle the batches.
    batches = []
    chunk = 64 * recipe.batch_size
    for start in range(0, n, chunk):
        part = sorted(examples[start : start + chunk], key=lambda e: len(e[0]))
        batches += [part[i : i + recipe.batch_size] for i in range(0, len(part), recipe.batch_size)]
    rng.shuffle(batches)
    return batches


def _model(vocab_size: int, recipe: Recipe) -> LlamaForCausalLM:
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads,
        num_key_value_heads=recipe.num_attention_heads,
        max_position_embeddings=MODEL_MAX_LENGTH,
        pad_token_id=0,
        bos_token_id=3,
        eos_token_id=1,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        max_new_tokens=recipe.max_new_tokens, do_sample=False, pad_token_id=0, bos_token_id=3, eos_token_id=1
    )
    return model


def train_teacher(name: str, seed: int = 0, steps: int | None = None, base_tok: Tokenizer | None = None,
                  recipe: Recipe = RECIPE, families: Sequence[str] | None = None,
                  callback: Callable[[int, LlamaForCausalLM, PreTrainedTokenizerFast], None] | None = None,
                  ) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Train teacher ``name`` for ``steps`` (default: the recipe's) optimizer steps on its ``families``
    (default ``TEACHER_FAMILIES[name]``); return (model, tokenizer). ``callback(step, model, tokenizer)`` runs
    at every progress line (about every tenth of the steps), e.g. to measure a learning curve."""
    import torch
    import torch.nn.functional as F

    steps = recipe.steps if steps is None else steps
    tokenizer = wrap_tokenizer(base_tok or train_tokenizer(), seq2seq=False)
    families = TEACHER_FAMILIES[name] if families is None else families
    log.info("training tiny teacher %s on %s: %d steps of %d examples (about %d s on 2 free CPU cores)",
             name, ", ".join(families), steps, recipe.batch_size, round(steps * recipe.batch_size * 0.025))
    started = time.perf_counter()
    batches = training_examples(name, seed, steps, tokenizer, recipe, families)
    torch.manual_seed(1000 * seed + 100 + TRAINED_TEACHERS.index(name))
    model = _model(len(tokenizer), recipe)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95),
                                  weight_decay=recipe.weight_decay, fused=True)
    warmup = min(recipe.warmup_steps, max(steps - 1, 1))

    def lr_factor(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(steps - warmup, 1))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    every = max(1, steps // 10)
    running, count = 0.0, 0
    train_start = time.perf_counter()
    for step, batch in enumerate(batches, 1):
        width = max(len(ids) for ids, _ in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)  # right-padded with <pad>: causal, no mask needed
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, (seq, prompt_len) in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, prompt_len : len(seq)] = torch.tensor(seq[prompt_len:])
        hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
        target = labels[:, 1:]
        keep = target != -100
        logits = model.lm_head(hidden[keep])  # only where a rationale token is predicted
        loss = F.cross_entropy(logits, target[keep])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        running, count = running + loss.item(), count + 1
        if step % every == 0 or step == steps:
            spent = time.perf_counter() - train_start
            log.info("%s: step %d/%d, loss %.3f, %.0f s, ETA %.0f s", name, step, steps, running / count, spent,
                     spent / step * (steps - step))
            running, count = 0.0, 0
            if callback is not None:
                model.eval()
                callback(step, model, tokenizer)
                model.train()
    model.eval()
    log.info("trained tiny teacher %s in %.0f s", name, time.perf_counter() - started)
    return model, tokenizer


def build_trained_teachers(out_dir: str | os.PathLike[str], seed: int = 0, steps: int | None = None,
                           base_tok: Tokenizer | None = None) -> dict[str, Path]:
    """Build (or reuse) ``skilled-a`` and ``skilled-b`` under ``out_dir``; return ``{name: model_dir}``.

    A dir whose ``tiny.json`` names this recipe, seed and step count is reused as it is; one of ours of
    another recipe, seed or step count is rebuilt; anything else in the way is refused (``NotOursError``).
    """
    steps = RECIPE.steps if steps is None else steps
    root = Path(out_dir)
    check_root(root, TRAINED_TEACHERS)
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name in TRAINED_TEACHERS:
        marker = _marker(name, seed, steps)
        if _is_complete(root / name, marker):
            paths[name] = root / name
            continue
        if base_tok is None:
            base_tok = train_tokenizer()

        def save(path: Path, name: str = name, tok: Tokenizer = base_tok) -> None:
            model, tokenizer = train_teacher(name, seed, steps, tok)
            save_model(path, model, tokenizer)

        paths[name] = _build_one(root, name, marker, save)
    return paths
