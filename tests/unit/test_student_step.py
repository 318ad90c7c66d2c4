"""The student's step in one pass (``model.MultiTask``, ``loss.task_cross_entropy``) and its T5 layers rebuilt for
bf16 (``kernels.speed_up``): the same losses, gradients and outputs as one forward per task on the stock
transformers model (no Ray)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from tests.unit.test_train_steps import rows, take
from tinyllm_ray.student import loss as loss_module
from tinyllm_ray.student.batches import collate
from tinyllm_ray.student.kernels import speed_up
from tinyllm_ray.student.loss import IGNORE, task_cross_entropy, token_cross_entropy
from tinyllm_ray.student.model import MultiTask, decoder_groups, load_student, reference_losses

TASKS = ["answer", "reference"]


def t5(gated: bool = True) -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(
        vocab_size=96, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
        feed_forward_proj="gated-gelu" if gated else "relu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, tie_word_embeddings=not gated))


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(a: torch.nn.Module, b: torch.nn.Module, tol: float = 1e-5) -> None:
    ga, gb = grads(a), grads(b)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        assert torch.allclose(ga[name], gb[name], atol=tol, rtol=1e-4), name


# --- one pass for all tasks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["seq2seq", "one_encoder", "causal"])
def test_one_pass_gives_the_losses_and_gradients_of_one_forward_per_task(tiny_models: Path, layout: str) -> None:
    """Ragged rows, a question without a rationale, the three layouts: each task's loss and the weighted sum's
    gradient equal those of one forward per task (the step before one pass)."""
    student_dir = tiny_models / ("teacher-a" if layout == "causal" else "student-t5")
    tokenized = rows(student_dir, layout, n=8)
    tokenized["labels__reference"][3] = tokenized["labels__reference"][3][:0]  # a teacher that wrote nothing
    if layout == "one_encoder":
        tokenized["dec__reference"][3] = tokenized["dec__reference"][3][:0]
    batch = collate(take(tokenized, list(range(8))), TASKS, 0, layout=layout)
    assert batch["reference"]["labels"].size(0) == 7  # the row without a target is left out of its task
    model = load_student(str(student_dir)).eval()
    stock = copy.deepcopy(model)
    one_pass = MultiTask(model, layout, TASKS)
    got, want = one_pass(batch), reference_losses(stock, layout, batch, TASKS)
    for task in TASKS:
        assert got[task].item() == pytest.approx(want[task].item(), rel=1e-5)
    (got["answer"] + 0.5 * got["reference"]).backward()
    (want["answer"] + 0.5 * want["reference"]).backward()
    assert_same_grads(model, stock)


def test_the_encoder_runs_once_for_every_task_of_a_batch(tiny_models: Path) -> None:
    student_dir = tiny_models / "student-t5"
    batch = collate(take(rows(student_dir, "seq2seq", n=4), list(range(4))), TASKS, 0)
    model = load_student(str(student_dir))
    calls = []
    model.get_encoder().register_forward_pre_hook(lambda *_: calls.append(1))
    MultiTask(model, "seq2seq", TASKS)(batch)
    assert len(calls) == 1
    reference_losses(model, "seq2seq", batch, TASKS)
    assert len(calls) == 1 + len(TASKS)


def test_decoder_passes_group_targets_of_similar_length() -> None:
    rows8 = dict.fromkeys(["answer", "a", "b"], 8)
    # the short answer apart (padding it to a rationale's length costs more than a pass), rationales together
    assert decoder_groups({"answer": 8, "a": 128, "b": 128}, rows8) == [["answer"], ["a", "b"]]
    assert decoder_groups({"answer": 8, "a": 128, "b": 112}, rows8) == [["answer"], ["b", "a"]]
    assert decoder_groups({"answer": 64, "a": 64, "b": 64}, rows8) == [["answer", "a", "b"]]
    assert decoder_groups({"answer": 8, "a": 64, "b": 128}, rows8) == [["answer"], ["a"], ["b"]]
    assert decoder_groups({}, {}) == []


# --- the loss -----------------------------------------------------------------------------------------------------

def test_task_cross_entropy_is_each_tasks_token_mean_with_its_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two logit blocks of different widths and three tasks (one with no target token), cut into chunks of a few
    rows: each task's loss and the gradient of a weighted sum are those of ``F.cross_entropy`` per task."""
    monkeypatch.setattr(loss_module, "CHUNK_ELEMENTS", 3 * 11)  # three rows of the 11-token vocabulary a chunk
    g = torch.Generator().manual_seed(0)
    blocks = [torch.randn(4, 5, 11, generator=g, requires_grad=True),
              torch.randn(3, 2, 11, generator=g, requires_grad=True)]
    labels = [torch.randint(0, 11, (4, 5), generator=g), torch.randint(0, 11, (3, 2), generator=g)]
    labels[0][:, 3:] = IGNORE
    labels[1][2] = IGNORE
    tasks = [torch.tensor([0, 0, 1, 1]), torch.tensor([2, 2, 2])]
    got = task_cross_entropy(list(zip(blocks, labels, tasks)), 4)
    weights = torch.tensor([1.0, 0.5, 2.0, 3.0])
    (got * weights).sum().backward()
    fused = [b.grad.clone() for b in blocks]
    for b in blocks:
        b.grad = None
    want = torch.stack([token_cross_entropy(blocks[0][:2], labels[0][:2]),
                        token_cross_entropy(blocks[0][2:], labels[0][2:]),
                        token_cross_entropy(blocks[1], labels[1]), torch.zeros(())])
    (want * weights).sum().backward()
    assert torch.allclose(got, want, atol=1e-6)
    assert got[3].item() == 0.0 and got.requires_grad
    for a, b in zip(fused, blocks):
        assert torch.allclose(a, b.grad, atol=1e-6)


def test_bf16_logits_keep_their_dtype_and_the_losses_stay_close() -> None:
    """bf16 logits (autocast's output): the gradient comes back in bf16 (no fp32 copy of the logits is kept);
    the losses are those of fp32 cross-entropy on the same bf16 values."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 7, 50, generator=g).to(torch.bfloat16).requires_grad_()
    labels = torch.randint(0, 50, (6, 7), generator=g)
    got = task_cross_entropy([(logits, labels, torch.zeros(6, dtype=torch.long))], 1)
    got.sum().backward()
    assert logits.grad.dtype == torch.bfloat16
    assert got.item() == pytest.approx(token_cross_entropy(logits.detach().float(), labels).item(), rel=1e-6)


# --- the rebuilt T5 layers -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("gated", [True, False])
def test_rebuilt_t5_layers_compute_what_transformers_t5_computes(gated: bool) -> None:
    """fp32: the same logits (padding in the encoder input and the decoder's causal order included) and the
    same gradients for every weight."""
    model = t5(gated)
    stock = copy.deepcopy(model)
    assert speed_up(model) == ["norms", "feed-forward", "attention"]
    ids = torch.randint(2, 96, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    labels = torch.randint(2, 96, (3, 5))
    outs = [m(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False) for m in (model, stock)]
    assert torch.allclose(outs[0].logits, outs[1].logits, atol=1e-5)
    for out in outs:
        out.loss.backward()
    assert_same_grads(model, stock)


def test_rebuilt_t5_generates_what_transformers_t5_generates() -> None:
    """Generation (transformers' attention with a key/value cache, fed the rebuilt position bias): the same
    greedy tokens."""
    model = t5()
    stock = copy.deepcopy(model)
    speed_up(model)
    ids = torch.randint(2, 96, (2, 7))
    same = [m.generate(input_ids=ids, max_new_tokens=6, do_sample=False) for m in (model.eval(), stock.eval())]
    assert torch.equal(same[0], same[1])
    assert speed_up(model) == []  # once only


def test_a_rebuilt_student_saves_transformers_own_files(tmp_path: Path) -> None:
    model = t5()
    stock = copy.deepcopy(model)
    speed_up(model)
    model.save_pretrained(tmp_path / "rebuilt")
    stock.save_pretrained(tmp_path / "stock")
    config = json.loads((tmp_path / "rebuilt" / "config.json").read_text())
    assert config == json.loads((tmp_path / "stock" / "config.json").read_text())
    loaded = T5ForConditionalGeneration.from_pretrained(tmp_path / "rebuilt")
    assert type(loaded.encoder.block[0].layer[1].DenseReluDense.act).__name__ == "NewGELUActivation"


def test_bf16_attention_runs_in_bf16_with_a_trainable_position_bias() -> None:
    """Under bf16 autocast no matrix product of the rebuilt T5 gets an fp32 operand (the stock model's SDPA falls
    back to fp32 for its trainable, permuted position bias), and the position bias still learns."""
    from bench.gpu import OpCounter

    model = t5()
    speed_up(model)
    ids = torch.randint(2, 96, (2, 8))
    with OpCounter() as counter, torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, labels=torch.randint(2, 96, (2, 6)), use_cache=False).loss.backward()
    assert counter.fp32_matmuls == 0
    bias = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    assert bias.grad is not None and bias.grad.abs().sum() > 0
    stock = t5()
    with OpCounter() as counter, torch.autocast("cpu", dtype=torch.bfloat16):
        stock(input_ids=ids, labels=torch.randint(2, 96, (2, 6)), use_cache=False).loss.backward()
    assert counter.fp32_matmuls > 0  # the check can see what it is there to catch


def causal(kind: str) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**shape))
    return Qwen2ForCausalLM(Qwen2Config(**shape))  # biases on query, key and value


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_rebuilt_llama_and_qwen2_layers_compute_what_transformers_computes(kind: str) -> None:
    """fp32, grouped-query attention, a padded row: the same logits and gradients as the stock model, and the same
    greedy generation (the rebuilt attention with the key/value cache)."""
    model = causal(kind)
    stock = copy.deepcopy(model)
    assert speed_up(model) == ["norms", "feed-forward", "attention"]
    ids = torch.randint(3, 64, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as generation pads
    outs = [m(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False) for m in (model, stock)]
    assert torch.allclose(outs[0].logits, outs[1].logits, atol=1e-5)
    for out in outs:
        out.loss.backward()
    assert_same_grads(model, stock)
    made = [m.eval().generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
            for m in (model, stock)]
    assert torch.equal(made[0], made[1])


def test_models_of_other_families_are_left_as_they_are() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2))
    assert speed_up(model) == []
    assert MultiTask(model, "causal", TASKS).kernels == []


@pytest.mark.slow
def test_train_compile_with_inductor_keeps_the_eager_losses_on_the_cpu() -> None:
    """``train.compile: default`` through inductor's CPU code generation (about a minute on 2 cores): the one-pass
    step and its autograd functions compile (``index_add`` in the loss did not, torch 2.13) and give the eager
    losses step by step."""
    from bench.gpu import TASKS as BENCH_TASKS
    from bench.gpu import make_arm, t5_model, task_batch, train_step

    torch.manual_seed(0)
    model = t5_model("tiny-t5", 512)
    twin = copy.deepcopy(model)
    arms = [make_arm(MultiTask(model, "seq2seq", list(BENCH_TASKS))),
            make_arm(MultiTask(twin, "seq2seq", list(BENCH_TASKS), compile="default"))]
    data = task_batch(4, 32, 512, torch.device("cpu"))
    for _ in range(3):
        eager, compiled = (float(train_step(a, data, torch.device("cpu"))) for a in arms)
        assert compiled == pytest.approx(eager, rel=1e-4)


def test_under_fsdp_every_batch_makes_the_same_forward_calls(tiny_models: Path) -> None:
    """FSDP's ranks gather each sharded block together, so they must make the same forward calls: with
    ``strategy: fsdp`` collation keeps a task without targets as filler rows (loss 0) and the passes do not depend
    on the lengths; one batch with every rationale and one without any make the same decoder calls."""
    from types import SimpleNamespace

    from tinyllm_ray.student.batches import padding

    student_dir = tiny_models / "student-t5"
    tokenized = rows(student_dir, "seq2seq", n=8)
    multiple, fixed = padding(SimpleNamespace(compile="off", pad_multiple=0, batch_size=4, strategy="fsdp"))
    assert (multiple, fixed) == (0, 4)
    assert padding(SimpleNamespace(compile="off", pad_multiple=0, batch_size=4, strategy="ddp")) == (0, None)
    full = collate(take(tokenized, [0, 1, 2, 3]), TASKS, 0, "seq2seq", multiple, fixed)
    without = take(tokenized, [4, 5, 6, 7])
    without["labels__reference"] = [x[:0] for x in without["labels__reference"]]
    bare = collate(without, TASKS, 0, "seq2seq", multiple, fixed)
    assert bare["reference"] is not None and (bare["reference"]["labels"] == IGNORE).all()
    model = load_student(str(student_dir))
    calls: list[int] = []
    model.get_decoder().register_forward_pre_hook(lambda *_: calls.append(1))
    module = MultiTask(model, "seq2seq", TASKS, fixed_passes=True)
    counts = []
    for batch in (full, bare):
        calls.clear()
        losses = module(batch)
        counts.append(len(calls))
    assert counts == [2, 2]  # the answer's pass and the rationales' pass, both times
    assert losses["reference"].item() == 0.0


def test_fixed_passes_do_not_depend_on_the_lengths() -> None:
    model = t5()
    module = MultiTask(model, "seq2seq", ["answer", "a", "b"], fixed_passes=True)
    seen = []
    module._losses = lambda batch, groups: seen.append(groups) or {}
    for widths in ((8, 128, 128), (120, 128, 8)):
        batch = {t: {"labels": torch.zeros(2, w, dtype=torch.long)} for t, w in zip(["answer", "a", "b"], widths)}
        module(batch)
    assert seen == [[["answer"], ["a", "b"]]] * 2
