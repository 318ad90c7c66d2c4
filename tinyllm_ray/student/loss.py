"""The TinyLLM multi-task loss, in plain torch (no Ray, no transformers; unit-tested on random tensors).

    loss = gamma * L(answer | "predict: " + q) + sum_i alpha_i * L(rationale_i | "explain_<t_i>: " + q)

Each L is the token-level cross-entropy of one task's targets (padding and missing targets carry the
label ``IGNORE``), averaged over that task's target tokens in the batch, as HF models do. Causal students
score the targets after ``causal_shift`` with the prompt tokens labelled ``IGNORE``.

``task_cross_entropy`` is the training step's form of the same sums: the tokens of several tasks in one call,
the per-task sums out, and the gradient of the logits made in the forward, chunk by chunk, so the step never
holds the logits in fp32 (``token_cross_entropy`` stays the plain reference it is tested against).
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


# Logit elements turned into fp32 at a time by ``task_cross_entropy`` (128 MiB of fp32): the rest of the logits stay in
# the compute dtype. Large enough that a CPU step or a small GPU batch is one chunk.
CHUNK_ELEMENTS = 1 << 25


class _TaskCrossEntropy(torch.autograd.Function):
    """Per-task sums of token cross-entropy, with the logits' gradient computed in the forward (softmax - one-hot,
    one fp32 chunk at a time, stored in the logits' dtype) and scaled by each task's incoming gradient in the
    backward. Written by hand: ``F.cross_entropy`` under autocast copies every logit to fp32 and keeps its fp32
    log-softmax for the backward (gigabytes a step for a 32k vocabulary), and it returns one number, not one per
    task. The idea is Liger-Kernel's and Apple's cut cross-entropy, in plain torch ops so it runs on any device
    and under ``torch.compile``."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, tasks: torch.Tensor,
                n_tasks: int) -> torch.Tensor:
        valid = labels != IGNORE
        safe = labels.clamp(min=0).unsqueeze(1)
        grad = torch.empty_like(logits)
        ce = torch.empty(labels.shape, dtype=torch.float32, device=logits.device)
        rows = max(1, CHUNK_ELEMENTS // max(logits.size(1), 1))
        for start in range(0, logits.size(0), rows):
            part = slice(start, start + rows)
            x = logits[part].float()
            lse = torch.logsumexp(x, dim=1, keepdim=True)
            ce[part] = (lse - x.gather(1, safe[part])).squeeze(1)
            probs = (x - lse).exp_().scatter_add_(1, safe[part], torch.full_like(lse, -1.0))
            grad[part] = probs
        ctx.save_for_backward(grad, tasks, valid)
        return (task_mask(tasks, n_tasks) * (ce * valid).unsqueeze(1)).sum(0)

    @staticmethod
    def backward(ctx, upstream: torch.Tensor):
        grad, tasks, valid = ctx.saved_tensors
        scale = (upstream.index_select(0, tasks) * valid).to(grad.dtype)
        return grad * scale.unsqueeze(1), None, None, None


def task_mask(tasks: torch.Tensor, n_tasks: int) -> torch.Tensor:
    """[N, n_tasks] float: row i is 1 in column ``tasks[i]``. A comparison, not ``F.one_hot`` (which reads the
    ids' range back to the host) nor ``index_add`` (which inductor's CPU code generation fails on in torch 2.13)."""
    return (tasks.unsqueeze(1) == torch.arange(n_tasks, device=tasks.device)).float()


def task_cross_entropy(parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                       n_tasks: int) -> torch.Tensor:
    """Mean cross-entropy per task over the target tokens of several logit blocks: ``parts`` holds
    (logits [B, T, V], labels [B, T] with ``IGNORE``, task [B]: each row's task index < ``n_tasks``).
    Returns [n_tasks]: what ``token_cross_entropy`` gives each task's rows alone (a task without targets: 0,
    still attached to the graph). No device->host read."""
    sums, counts = None, None
    for logits, labels, task in parts:
        flat = labels.reshape(-1)
        per_token = task.unsqueeze(1).expand(labels.shape).reshape(-1)
        part = _TaskCrossEntropy.apply(logits.reshape(-1, logits.size(-1)), flat, per_token, n_tasks)
        count = (task_mask(per_token, n_tasks) * (flat != IGNORE).float().unsqueeze(1)).sum(0)
        sums = part if sums is None else sums + part
        counts = count if counts is None else counts + count
    return sums / counts.clamp(min=1)


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
