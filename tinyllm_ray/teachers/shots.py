"""The in-context example generator: which solved training questions each teacher prompt shows.

Three modes (``teachers[].shots_mode``), all deterministic for a given seed and never showing a question
as its own example:

- ``random``: k questions drawn per question (``prompts.pick_shots``), shown with their answers;
- ``generated``: the teacher first explains a seeded pool of training questions zero-shot
  (``pool_questions``); the pool questions it explained become its examples, shown with its own
  rationales (``generated_shots``);
- ``similar``: the k training questions most similar to the question (``similar_shots``), by cosine
  similarity of TF-IDF vectors of the question, context and option words. Written here rather than
  taken from scikit-learn: it is a dozen lines of torch, and a whole library for it is not worth it.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from collections.abc import Sequence

import torch

from tinyllm_ray import prompts
from tinyllm_ray.data.schema import Question

# Words hash into this many TF-IDF dimensions: collisions are rare at the vocabulary sizes of QA datasets
# and only blur the similarity a little; the vectors of 10k questions stay at 160 MB.
_DIMS = 4096
_WORD = re.compile(r"\w+")


def random_shots(questions: Sequence[Question], pool: Sequence[Question], k: int, seed: int) -> dict[str, list[Question]]:
    return {q.id: prompts.pick_shots(q, pool, k, seed) for q in questions}


def pool_questions(train: Sequence[Question], size: int, seed: int) -> list[Question]:
    """The training questions a ``generated``-mode teacher explains first (seeded sample)."""
    rng = random.Random(f"shot-pool:{seed}")
    return rng.sample(list(train), min(size, len(train)))


def generated_shots(
    questions: Sequence[Question], explained: dict[str, tuple[Question, str]], k: int, seed: int
) -> dict[str, tuple[list[Question], list[str]]]:
    """Examples (and their rationales) from the pool questions the teacher explained (id -> (question, rationale)).

    Fewer than k explained questions (the teacher's zero-shot output was rejected) gives fewer examples.
    """
    pool = [q for q, _ in explained.values()]
    out = {}
    for q in questions:
        n = min(k, sum(p.id != q.id for p in pool))
        shots = prompts.pick_shots(q, pool, n, seed)
        out[q.id] = (shots, [explained[s.id][1] for s in shots])
    return out


def _words(q: Question) -> list[str]:
    text = " ".join([q.context or "", q.question, *q.choices]).lower()
    return _WORD.findall(text)


def _bucket(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") % _DIMS


def _tfidf(docs: list[list[str]], idf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    counts = torch.zeros(len(docs), _DIMS)
    for row, words in enumerate(docs):
        for bucket, n in Counter(_bucket(w) for w in words).items():
            counts[row, bucket] = 1 + math.log(n)
    if idf is None:
        df = (counts > 0).sum(0).float()
        idf = torch.log((1 + len(docs)) / (1 + df)) + 1
    vectors = counts * idf
    return torch.nn.functional.normalize(vectors, dim=1), idf


def similar_shots(
    questions: Sequence[Question], pool: Sequence[Question], k: int, chunk: int = 1024
) -> dict[str, list[Question]]:
    """For each question, the k most similar pool questions (most similar first), never itself."""
    if k == 0:
        return {q.id: [] for q in questions}
    pool_vectors, idf = _tfidf([_words(p) for p in pool])
    pool_ids = [p.id for p in pool]
    position = {pid: i for i, pid in enumerate(pool_ids)}
    out: dict[str, list[Question]] = {}
    for start in range(0, len(questions), chunk):
        part = questions[start : start + chunk]
        vectors, _ = _tfidf([_words(q) for q in part], idf)
        scores = vectors @ pool_vectors.T
        for row, q in enumerate(part):
            if q.id in position:
                scores[row, position[q.id]] = -math.inf
        # stable: ties go to the earlier pool question, so the choice is deterministic
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : k + 1]
        for row, q in enumerate(part):
            picks = [pool[int(i)] for i in order[row] if pool_ids[int(i)] != q.id][:k]
            if len(picks) < k:
                raise ValueError(f"{k} shots requested but only {len(picks)} other training questions")
            out[q.id] = picks
    return out
