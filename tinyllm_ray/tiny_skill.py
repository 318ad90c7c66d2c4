"""How much a tiny trained teacher knows: its own accuracy per problem family, its rationales' acceptance.

The teachers of ``tinyllm_ray.tiny_trained`` are measured the way a run uses them: ``family_accuracy`` asks
each question with ``prompts.answer_prompt`` (the teacher answers by itself) and reads the conclusion with
``replies.parse_answer``; ``rationale_acceptance`` gives the gold answer with ``prompts.teacher_prompt`` and
counts what ``replies.clean_rationale`` accepts. ``evaluation_sets`` are the quickstart's valid + test
questions of data seeds 0-4, never seen in training. ``python -m tinyllm_ray.tiny_skill DIR`` builds (or reuses)
both teachers in DIR and prints their accuracy per family against chance.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinyllm_ray import prompts, replies
from tinyllm_ray.data import synthetic
from tinyllm_ray.data.schema import Question
from tinyllm_ray.tiny_trained import RECIPE, TEACHER_FAMILIES, build_trained_teachers


def _engine(model: Any, max_new_tokens: int, batch_size: int) -> Any:
    """An ``HFEngine`` for a model dir (an engine passes through)."""
    if not isinstance(model, (str, os.PathLike)):
        return model
    from tinyllm_ray.teachers.engines import HFEngine, Settings

    return HFEngine(str(model), Settings(max_new_tokens=max_new_tokens), batch_size=batch_size)


def chance(questions: Sequence[Question]) -> dict[str, float]:
    """Per family, the mean chance of a random guess (1 / number of options)."""
    sums: dict[str, list[float]] = defaultdict(list)
    for q in questions:
        sums[synthetic.family_of(q)].append(1 / len(q.choices))
    return {f: sum(v) / len(v) for f, v in sorted(sums.items())}


def answers(model: Any, questions: Sequence[Question], shots: int = 2, pool: Sequence[Question] | None = None,
            *, seed: int = 0, max_new_tokens: int = RECIPE.max_new_tokens, batch_size: int = 16) -> list[str]:
    """The teacher's raw continuations of ``prompts.answer_prompt`` (``shots`` examples from ``pool``, by
    default the questions themselves, drawn as a run draws them)."""
    engine = _engine(model, max_new_tokens, batch_size)
    pool = questions if pool is None else pool
    texts = [prompts.answer_prompt(q, prompts.pick_shots(q, pool, shots, seed)) for q in questions]
    return [g.text for g in engine.generate(texts)]


def family_accuracy(model: Any, questions: Sequence[Question], shots: int = 2,
                    pool: Sequence[Question] | None = None, **kwargs: Any) -> dict[str, float]:
    """Per family, the share of ``questions`` the teacher (a model dir or an engine) answers right by itself:
    ``prompts.answer_prompt`` with ``shots`` examples, its conclusion read by ``replies.parse_answer`` (no
    conclusion, or one naming no option, is wrong). Keyword arguments go to ``answers``."""
    outs = answers(model, questions, shots, pool, **kwargs)
    right: dict[str, list[bool]] = defaultdict(list)
    for q, text in zip(questions, outs):
        right[synthetic.family_of(q)].append(replies.parse_answer(text, q.choices)[1] == q.answer_index)
    return {f: sum(v) / len(v) for f, v in sorted(right.items())}


def rationale_acceptance(model: Any, questions: Sequence[Question], shots: int = 2,
                         pool: Sequence[Question] | None = None, *, min_words: int = 3, seed: int = 0,
                         max_new_tokens: int = RECIPE.max_new_tokens, batch_size: int = 16,
                         ) -> tuple[dict[str, float], list[tuple[Question, str, str | None]]]:
    """Per family, the share of the teacher's ``prompts.teacher_prompt`` outputs (gold answer shown) that
    ``replies.clean_rationale`` accepts; and every (question, rationale, reject reason) for reading."""
    engine = _engine(model, max_new_tokens, batch_size)
    pool = questions if pool is None else pool
    texts = [prompts.teacher_prompt(q, prompts.pick_shots(q, pool, shots, seed)) for q in questions]
    rows = []
    ok: dict[str, list[bool]] = defaultdict(list)
    for q, prompt, g in zip(questions, texts, engine.generate(texts)):
        text, reason = replies.clean_rationale(g.text, q, prompt, min_words=min_words)
        rows.append((q, text, reason))
        ok[synthetic.family_of(q)].append(reason is None)
    return {f: sum(v) / len(v) for f, v in sorted(ok.items())}, rows


def evaluation_sets(data_seeds: Sequence[int] = range(5)) -> list[tuple[list[Question], list[Question]]]:
    """(valid + test questions, train split) of the quickstart's data for each seed: held out from training,
    with the split a run draws its in-context examples from."""
    out = []
    for s in data_seeds:
        splits = synthetic.generate(256, 64, 64, seed=s)
        out.append((splits["valid"] + splits["test"], splits["train"]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build (or reuse) the trained teachers in DIR and print each one's accuracy per family."""
    parser = argparse.ArgumentParser(
        prog="python -m tinyllm_ray.tiny_skill",
        description="Build (or reuse) the tiny teachers trained on CPU, then print each one's own accuracy per "
                    "family (answering prompt) on the quickstart's valid + test questions, against chance.",
    )
    parser.add_argument("out_dir", type=Path, help="directory of the tiny models")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the build")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default {RECIPE.steps})")
    parser.add_argument("--shots", type=int, default=2, help="in-context examples in the answering prompt")
    parser.add_argument("--data-seeds", type=int, nargs="+", default=list(range(5)),
                        help="quickstart data seeds whose valid + test questions are measured")
    parser.add_argument("--max-new-tokens", type=int, default=RECIPE.max_new_tokens)
    parser.add_argument("--rationales", action="store_true",
                        help="also the share of rationale-prompt outputs clean_rationale accepts (min 3 words)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = build_trained_teachers(args.out_dir, seed=args.seed, steps=args.steps)
    sets = evaluation_sets(args.data_seeds)
    every = [q for qs, _ in sets for q in qs]
    base = chance(every)
    counts = {f: sum(synthetic.family_of(q) == f for q in every) for f in base}
    print(f"answering prompt, {args.shots} shots, {len(every)} questions (valid + test of data seeds "
          f"{' '.join(map(str, args.data_seeds))})")
    print("teacher     families              " + "".join(f"{f:>12}" for f in base))
    print(f"{'chance':<34}" + "".join(f"{base[f]:>12.3f}" for f in base))
    print(f"{'questions':<34}" + "".join(f"{counts[f]:>12d}" for f in base))
    for name, path in paths.items():
        engine = _engine(path, args.max_new_tokens, 16)
        right: dict[str, float] = defaultdict(float)
        for qs, pool in sets:
            for f, acc in family_accuracy(engine, qs, args.shots, pool).items():
                right[f] += acc * sum(synthetic.family_of(q) == f for q in qs)
        fams = "+".join(TEACHER_FAMILIES[name])
        print(f"{name:<12}{fams:<22}" + "".join(f"{right[f] / counts[f]:>12.3f}" for f in base))
        if args.rationales:  # the quickstart's training split (seed 0), up to 64 questions per family
            train = sets[0][1] if args.data_seeds else synthetic.generate(256, 64, 64, seed=0)["train"]
            picked = [q for f in base for q in [x for x in train if synthetic.family_of(x) == f][:64]]
            accepted, _ = rationale_acceptance(engine, picked, args.shots, train)
            print(f"{'  rationales accepted':<34}" + "".join(f"{accepted.get(f, 0.0):>12.3f}" for f in base))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
