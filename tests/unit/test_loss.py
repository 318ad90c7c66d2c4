"""Property tests of the TinyLLM multi-task loss on random tensors (torch only)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tinyllm_ray.student.loss import IGNORE, multitask_loss, token_cross_entropy

SEEDS = [0, 1, 2, 3]
B, T, V = 3, 7, 11


def random_case(seed: int, b: int = B, t: int = T, v: int = V) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g)
    labels = torch.randint(0, v, (b, t), generator=g)
    return logits, labels


def with_padding(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Right-pad each row with IGNORE at a random length (>= 1 real token per row)."""
    g = torch.Generator().manual_seed(seed + 1000)
    out = labels.clone()
    for row in range(out.size(0)):
        keep = int(torch.randint(1, out.size(1) + 1, (1,), generator=g))
        out[row, keep:] = IGNORE
    return out


def reference_mean(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of -log p(label) over the non-IGNORE positions, computed by hand."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    mask = labels != IGNORE
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * mask).sum() / mask.sum()


# --- token_cross_entropy --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_near_zero_when_logits_favour_labels(seed: int) -> None:
    logits, labels = random_case(seed)
    logits.scatter_(-1, labels.unsqueeze(-1), 1e4)
    loss = token_cross_entropy(logits, labels)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_large_when_logits_favour_wrong_token(seed: int) -> None:
    logits, labels = random_case(seed)
    wrong = (labels + 1) % V
    logits.scatter_(-1, wrong.unsqueeze(-1), 50.0)
    assert token_cross_entropy(logits, labels).item() > 40


@pytest.mark.parametrize("seed", SEEDS)
def test_equals_cross_entropy_without_padding(seed: int) -> None:
    logits, labels = random_case(seed)
    got = token_cross_entropy(logits, labels)
    want = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1))
    assert got.shape == ()
    assert torch.allclose(got, want, atol=1e-6)
    assert got.item() == pytest.approx(reference_mean(logits, labels).item(), abs=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_ignore_positions_do_not_matter(seed: int) -> None:
    logits, labels = random_case(seed)
    labels = with_padding(labels, seed)
    assert (labels == IGNORE).any()
    before = token_cross_entropy(logits, labels)
    # scramble the logits at ignored positions: the value must not move
    noisy = logits.clone()
    ignored = labels == IGNORE
    noisy[ignored] = torch.randn(int(ignored.sum()), V) * 100
    after = token_cross_entropy(noisy, labels)
    assert torch.allclose(before, after, atol=1e-6)
    # and it is the mean over target tokens only (not over all positions)
    assert before.item() == pytest.approx(reference_mean(logits, labels).item(), abs=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_ignore_rows_equal_dropping_them(seed: int) -> None:
    logits, labels = random_case(seed, b=4)
    labels[1] = IGNORE
    full = token_cross_entropy(logits, labels)
    dropped = token_cross_entropy(logits[[0, 2, 3]], labels[[0, 2, 3]])
    assert torch.allclose(full, dropped, atol=1e-6)


def test_all_ignore_is_zero_and_backpropagates() -> None:
    logits, _ = random_case(0)
    logits.requires_grad_(True)
    labels = torch.full((B, T), IGNORE)
    loss = token_cross_entropy(logits, labels)
    assert loss.item() == 0.0
    assert not torch.isnan(loss)
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad == 0).all()


def test_all_ignore_through_a_layer_keeps_graph() -> None:
    """A zero loss from a batch with no targets can be summed with others and backpropagated."""
    layer = torch.nn.Linear(5, V)
    x = torch.randn(B, T, 5)
    empty = token_cross_entropy(layer(x), torch.full((B, T), IGNORE))
    _, labels = random_case(1)
    total = multitask_loss({"answer": token_cross_entropy(layer(x), labels), "t": empty}, {"answer": 1.0, "t": 1.0})
    total.backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


def test_gradient_matches_reference() -> None:
    logits, labels = random_case(5)
    labels = with_padding(labels, 5)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().double().requires_grad_(True)
    token_cross_entropy(a, labels).backward()
    reference_mean(b, labels).backward()
    assert torch.allclose(a.grad.double(), b.grad, atol=1e-6)
    assert (a.grad[labels == IGNORE] == 0).all()


def test_half_precision_logits_computed_in_float32() -> None:
    logits, labels = random_case(2)
    got = token_cross_entropy(logits.to(torch.bfloat16), labels)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference_mean(logits.to(torch.bfloat16).float(), labels).item(), abs=1e-4)


# --- multitask_loss -------------------------------------------------------------------------------


def task_losses(seed: int) -> dict[str, torch.Tensor]:
    out = {}
    for i, task in enumerate(["answer", "t1", "t2"]):
        logits, labels = random_case(seed * 10 + i)
        out[task] = token_cross_entropy(logits, with_padding(labels, seed * 10 + i))
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_gamma_one_alphas_zero_is_answer_loss(seed: int) -> None:
    losses = task_losses(seed)
    got = multitask_loss(losses, {"answer": 1.0, "t1": 0.0, "t2": 0.0})
    assert torch.allclose(got, losses["answer"])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("only", ["t1", "t2"])
def test_single_alpha_is_that_term(seed: int, only: str) -> None:
    losses = task_losses(seed)
    weights = {"answer": 0.0, "t1": 0.0, "t2": 0.0, only: 1.0}
    assert torch.allclose(multitask_loss(losses, weights), losses[only])


@pytest.mark.parametrize("seed", SEEDS)
def test_weighted_sum(seed: int) -> None:
    losses = task_losses(seed)
    weights = {"answer": 0.7, "t1": 0.2, "t2": 1.5}
    want = sum(weights[t] * losses[t] for t in losses)
    assert torch.allclose(multitask_loss(losses, weights), want)


@pytest.mark.parametrize("seed", SEEDS)
def test_linear_in_weights(seed: int) -> None:
    losses = task_losses(seed)
    g = torch.Generator().manual_seed(seed)
    w1 = {t: float(x) for t, x in zip(losses, torch.rand(3, generator=g) + 0.1)}
    w2 = {t: float(x) for t, x in zip(losses, torch.rand(3, generator=g) + 0.1)}
    a, b = 0.3, 2.5
    combined = {t: a * w1[t] + b * w2[t] for t in losses}
    lhs = multitask_loss(losses, combined)
    rhs = a * multitask_loss(losses, w1) + b * multitask_loss(losses, w2)
    assert torch.allclose(lhs, rhs, atol=1e-5)
    # scaling all weights scales the loss
    assert torch.allclose(multitask_loss(losses, {t: 3 * w for t, w in w1.items()}), 3 * multitask_loss(losses, w1))


def test_missing_tasks_are_skipped() -> None:
    losses = task_losses(0)
    weights = {"answer": 0.5, "t1": 2.0, "t2": 1.0}
    got = multitask_loss({"answer": losses["answer"], "t2": losses["t2"]}, weights)
    assert torch.allclose(got, 0.5 * losses["answer"] + losses["t2"])


def test_zero_weight_task_contributes_nothing_even_if_nan() -> None:
    losses = task_losses(0)
    losses["t1"] = torch.tensor(float("nan"))
    got = multitask_loss(losses, {"answer": 1.0, "t1": 0.0, "t2": 1.0})
    assert torch.isfinite(got)
    assert torch.allclose(got, losses["answer"] + losses["t2"])


def test_unknown_task_raises_key_error() -> None:
    losses = task_losses(0)
    with pytest.raises(KeyError, match="t2"):
        multitask_loss(losses, {"answer": 1.0, "t1": 1.0})


@pytest.mark.parametrize(
    ("present", "weights"),
    [(["answer", "t1", "t2"], {"answer": 0.0, "t1": 0.0, "t2": 0.0}),
     (["t1"], {"answer": 1.0, "t1": 0.0, "t2": 1.0}),
     ([], {"answer": 1.0})],
)
def test_no_nonzero_weight_raises_value_error(present: list[str], weights: dict[str, float]) -> None:
    losses = task_losses(0)
    with pytest.raises(ValueError):
        multitask_loss({t: losses[t] for t in present}, weights)


def test_gradients_flow_to_every_weighted_task() -> None:
    torch.manual_seed(0)
    heads = {t: torch.nn.Linear(4, V) for t in ["answer", "t1", "t2", "t3"]}
    x = torch.randn(B, T, 4)
    _, labels = random_case(3)
    losses = {t: token_cross_entropy(head(x), labels) for t, head in heads.items()}
    weights = {"answer": 1.0, "t1": 0.5, "t2": 0.0, "t3": 2.0}
    multitask_loss(losses, weights).backward()
    for task, head in heads.items():
        if weights[task] == 0:
            assert head.weight.grad is None or (head.weight.grad == 0).all()
        else:
            assert head.weight.grad is not None
            assert torch.isfinite(head.weight.grad).all()
            assert head.weight.grad.abs().sum() > 0


def test_gradient_scales_with_weight() -> None:
    logits, labels = random_case(4)
    grads = []
    for w in (1.0, 3.0):
        leaf = logits.clone().requires_grad_(True)
        multitask_loss({"answer": token_cross_entropy(leaf, labels)}, {"answer": w}).backward()
        grads.append(leaf.grad)
    assert torch.allclose(grads[1], 3 * grads[0], atol=1e-6)
    assert not math.isclose(float(grads[0].abs().sum()), 0.0)


def test_sequence_log_likelihood_sums_target_tokens_only():
    from tinyllm_ray.student.loss import sequence_log_likelihood

    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[1, 2, IGNORE, IGNORE], [3, 4, 5, 6]])
    logp = torch.log_softmax(logits, -1)
    expected = torch.stack([logp[0, 0, 1] + logp[0, 1, 2], sum(logp[1, t, labels[1, t]] for t in range(4))])
    assert torch.allclose(sequence_log_likelihood(logits, labels), expected)
    sure = torch.full((1, 2, 7), -50.0)
    sure[0, 0, 1] = sure[0, 1, 2] = 50.0
    assert sequence_log_likelihood(sure, torch.tensor([[1, 2]])).item() == pytest.approx(0.0, abs=1e-6)


# --- causal students: prompt tokens masked, targets scored after the shift ---------------------------


def test_causal_loss_scores_only_the_target_tokens() -> None:
    from tinyllm_ray.student.loss import causal_shift

    g = torch.Generator().manual_seed(7)
    prompt, target, v = 5, 3, 13
    ids = torch.randint(0, v, (2, prompt + target), generator=g)
    labels = ids.clone()
    labels[:, :prompt] = IGNORE  # what batches.Encoder writes for a causal row
    logits = torch.randn(2, prompt + target, v, generator=g)
    got = token_cross_entropy(*causal_shift(logits, labels))
    # position t predicts token t + 1: the targets are predicted from positions prompt-1 .. end-1
    logp = torch.log_softmax(logits.double(), -1)
    want = -torch.stack([logp[b, t, ids[b, t + 1]] for b in range(2) for t in range(prompt - 1, prompt + target - 1)]).mean()
    assert got.item() == pytest.approx(want.item(), abs=1e-5)
    # the prompt's own predictions do not matter
    noisy = logits.clone()
    noisy[:, : prompt - 1] = torch.randn(2, prompt - 1, v, generator=g) * 100
    assert token_cross_entropy(*causal_shift(noisy, labels)).item() == pytest.approx(got.item(), abs=1e-6)


def test_causal_shift_drops_the_last_prediction_and_the_first_label() -> None:
    from tinyllm_ray.student.loss import causal_shift

    logits, labels = torch.zeros(2, 6, 4), torch.arange(12).reshape(2, 6)
    shifted_logits, shifted_labels = causal_shift(logits, labels)
    assert shifted_logits.shape == (2, 5, 4)
    assert shifted_labels.tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 10, 11]]
