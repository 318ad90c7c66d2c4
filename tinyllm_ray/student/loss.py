"""The TinyLLM multi-task loss, in plain torch (no Ray, no transformers; unit-tested on random tensors).

    loss = gamma * L(answer | "predict: " + q) + sum_i alpha_i * L(rationale_i | "explain_<t_i>: " + q)

Each L is the token-level cross-entropy of one task's targets (padding and missing targets carry the
label ``IGNORE``), averaged over that task's target tokens in the batch, as HF models do. Causal students
score the targets after ``causal_shift`` with the prompt tokens labelled ``IGNORE``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over target tokens: logits [B, T, V], labels [B, T] with ``IGNORE`` padding.

    Returns a NaN-free zero (still attached to the graph) when no token is a target. The sum over targets
    divided by their count (at least 1), never a Python test on the labels: no GPU->CPU sync per task.
    """
    flat_labels = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), flat_labels, ignore_index=IGNORE,
                            reduction="sum")
    return total / (flat_labels != IGNORE).sum().clamp(min=1)


def multitask_loss(task_losses: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum of per-task losses; a task with weight 0 or absent from this batch adds nothing."""
    unknown = set(task_losses) - set(weights)
    if unknown:
        raise KeyError(f"no loss weight for task(s): {sorted(unknown)}")
    terms = [weights[task] * loss for task, loss in task_losses.items() if weights[task] != 0]
    if not terms:
        raise ValueError("no task with a non-zero weight in this batch")
    return torch.stack(terms).sum()


def sequence_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of target-token log-probabilities per sequence: logits [B, T, V], labels [B, T] -> [B].

    Rank classification scores each answer option with this and picks the most likely one.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    mask = labels != IGNORE
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=-1)


def causal_shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align a causal LM's outputs with its targets: position t predicts token t + 1.

    ``labels`` is the input sequence with ``IGNORE`` on every prompt (and padding) token, so after the
    shift only target tokens are scored.
    """
    return logits[:, :-1], labels[:, 1:]
