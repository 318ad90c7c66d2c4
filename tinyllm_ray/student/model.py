"""The student model: loading (seq2seq or causal), one forward per task, and the multi-task module.

``task_logits`` is the one forward of a task batch built by ``batches.collate`` (or by the scorers),
returning logits aligned with the labels for every layout: the training loss and rank classification
both use it. ``MultiTask`` wraps the HF model so one ``forward(batch)`` returns every task's loss: that is
the module Ray Train wraps in DDP/FSDP (one wrapped forward per micro-batch, so gradients sync once).

``MultiTask`` makes one pass for all tasks of a micro-batch: the encoder runs once over every task's inputs
(stacked rows; in the one-encoder layout over the questions alone), the decoder (or a causal model) once per
*group* of tasks whose targets are of similar length (``decoder_groups``: rationales together, the short answer
apart rather than padded to a rationale's length), and one ``loss.task_cross_entropy`` gives each task's mean
over its own tokens: the losses of one forward per task (``reference_losses``, kept as the tested reference).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from tinyllm_ray import prompts
from tinyllm_ray.config import Config
from tinyllm_ray.devices import is_encoder_decoder  # the rule lives there; the pipeline imports it from here
from tinyllm_ray.student.batches import QUESTION, Encoder, layout_of
from tinyllm_ray.student.kernels import speed_up as kernels_speed_up
from tinyllm_ray.student.loss import IGNORE, causal_shift, task_cross_entropy, token_cross_entropy


def load_student(model: str, trust_remote_code: bool = False) -> torch.nn.Module:
    """The student in fp32 whatever dtype its checkpoint was saved in (transformers 5 would keep a bf16/fp16
    checkpoint's dtype): fp32 master weights and AdamW state; bf16 compute comes from autocast (``devices``)."""
    auto = AutoModelForSeq2SeqLM if is_encoder_decoder(model, trust_remote_code) else AutoModelForCausalLM
    return auto.from_pretrained(model, trust_remote_code=trust_remote_code, dtype=torch.float32)


def block_classes(model: torch.nn.Module) -> set[type]:
    """The model's repeated transformer blocks (``T5Block``, ``LlamaDecoderLayer``, ...): the module classes its
    ``_no_split_modules`` names, which transformers declares for every architecture it can shard."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return {type(m) for m in model.modules() if type(m).__name__ in names}


# Without declared blocks, FSDP units of at least this many parameters (a size-based policy).
FSDP_MIN_UNIT_PARAMS = 20_000_000


def prepare_kwargs(model: torch.nn.Module, strategy: str) -> dict[str, Any]:
    """``parallel_strategy_kwargs`` for ``ray.train.torch.prepare_model``. FSDP gets a wrap policy: one FSDP unit
    per transformer block, so each rank holds a shard of every block and gathers one block at a time (without a
    policy the whole model is one unit: every rank gathers all of it for each forward, no memory saved, no
    overlap of communication with compute)."""
    if strategy != "fsdp":
        return {}
    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy, transformer_auto_wrap_policy

    classes = block_classes(model)
    if classes:
        return {"auto_wrap_policy": functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=classes)}
    return {"auto_wrap_policy": functools.partial(size_based_auto_wrap_policy,
                                                  min_num_params=FSDP_MIN_UNIT_PARAMS)}


def student_encoder(model: torch.nn.Module, tokenizer: Any, config: Config) -> Encoder:
    """The ``Encoder`` of a loaded student in the layout ``config`` trains it in (``encoder.layout``)."""
    s = config.student
    layout = layout_of(is_encoder_decoder(model), config.train.mode)
    return Encoder(tokenizer, layout, s.max_input_tokens, s.max_target_tokens,
                   getattr(model.config, "decoder_start_token_id", None), prompts.StudentText.of(s))


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def encode_questions(model: torch.nn.Module, question: dict[str, torch.Tensor]) -> torch.Tensor:
    """The one-encoder layout's shared encoder pass: hidden states [B, T, H]."""
    return model.get_encoder()(input_ids=question["input_ids"],
                               attention_mask=question["attention_mask"]).last_hidden_state


def task_logits(model: torch.nn.Module, layout: str, inputs: dict[str, torch.Tensor],
                question: dict[str, torch.Tensor] | None = None,
                encoded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of one task batch, aligned position by position. One forward, no generation: no key/value
    cache (transformers would build one per call, copying the model's config, and a compiled forward would then
    guard on that copy: one recompile per model instance)."""
    labels = inputs["labels"]
    if layout == "one_encoder":
        rows = inputs["rows"]
        out = model(encoder_outputs=(encoded[rows],), attention_mask=question["attention_mask"][rows],
                    decoder_input_ids=inputs["decoder_input_ids"], use_cache=False)
        return out.logits, labels
    if layout == "seq2seq":
        decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    decoder_input_ids=decoder_ids, use_cache=False)
        return out.logits, labels
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
    return causal_shift(out.logits, labels)


NO_TASK = "_none"  # ``MultiTask``'s zero loss when a batch has none of its tasks

# ``decoder_groups`` merges tasks into one decoder pass while the merged pass pads at most this share of tokens
# more than separate passes would: two rationales of similar length share a pass, a 8-token answer beside
# 128-token rationales does not (padding it to 128 would cost more than the second pass saves).
MERGE_SLACK = 0.25


def decoder_groups(widths: dict[str, int], rows: dict[str, int], slack: float = MERGE_SLACK) -> list[list[str]]:
    """Tasks in passes: sorted by target width (``widths``, padded tokens per row), adjacent tasks merged while
    the merged pass (rows x the widest) costs at most ``1 + slack`` times their separate passes. Shapes only
    (Python ints): no device read, and under ``torch.compile`` a guard on the widths, not a graph break."""
    order = sorted(widths, key=lambda t: widths[t])
    groups: list[list[str]] = []
    for task in order:
        if groups:
            group = [*groups[-1], task]
            merged = sum(rows[t] for t in group) * widths[task]
            separate = sum(rows[t] * widths[t] for t in group)
            if merged <= (1 + slack) * separate:
                groups[-1] = group
                continue
        groups.append([task])
    return groups


def _stack(parts: list[torch.Tensor], value: int) -> torch.Tensor:
    """Row blocks of different widths, right-padded with ``value`` to the widest and stacked."""
    width = max(p.size(1) for p in parts)
    return torch.cat([F.pad(p, (0, width - p.size(1)), value=value) if p.size(1) < width else p for p in parts])


class MultiTask(torch.nn.Module):
    """``forward(batch) -> {task: loss}`` over the tasks present in a collated batch, in one pass (the module
    docstring): the same losses as one forward per task (``reference_losses``).

    ``kernels``: rebuild a T5 student's layers for bf16 (``kernels.speed_up``; the same function).
    ``fixed_passes`` (FSDP): the same decoder passes for every batch (the answer, then all rationales), so every
    rank makes the same forward calls, which FSDP's gathers need; with ``collate``'s fixed rows every task is in
    every batch.
    ``compile`` (``train.compile``): ``default`` or ``reduce-overhead`` runs this forward (every task's pass and
    loss) through ``torch.compile``; the HF model inside stays the plain module, so evaluation, generation and
    saving use it as before. Shapes that vary between batches make torch compile a second, shape-generic graph
    (its automatic dynamic shapes) rather than one per shape; ``collate``'s fixed-shape padding keeps their count
    (and, with ``reduce-overhead``, the CUDA graphs recorded) small."""

    def __init__(self, model: torch.nn.Module, layout: str, tasks: list[str], compile: str = "off",
                 kernels: bool = True, fixed_passes: bool = False):
        super().__init__()
        self.model, self.layout, self.tasks, self.compile_mode = model, layout, tasks, compile
        self.fixed_passes = fixed_passes
        self.kernels = kernels_speed_up(model) if kernels else []
        self.pad = getattr(model.config, "pad_token_id", None) or 0
        # A plain attribute, not a submodule: the compiled function holds no parameters of its own.
        self._compiled = None if compile == "off" else torch.compile(
            self._losses, mode=None if compile == "default" else compile)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        present = [t for t in self.tasks if batch[t] is not None]
        if self.fixed_passes:  # the same passes whatever the lengths: the answer, then every rationale together
            groups = [g for g in ([t for t in present if t == prompts.ANSWER_TASK],
                                  [t for t in present if t != prompts.ANSWER_TASK]) if g]
        else:
            # Chosen here, outside a compiled function, from plain shapes: compiled, the passes are a constant
            # the graph is guarded on (a few groupings, a graph each), not comparisons of symbolic sizes.
            groups = decoder_groups({t: batch[t]["labels"].size(1) for t in present},
                                    {t: batch[t]["labels"].size(0) for t in present})
        if self._compiled is None:
            return self._losses(batch, groups)
        if self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the previous step's graph outputs are done
        # Without the row count (a Python int): torch would guard on it and compile again for a smaller batch.
        return self._compiled({k: v for k, v in batch.items() if k != "rows"}, groups)

    def _losses(self, batch: dict[str, Any], groups: list[list[str]]) -> dict[str, torch.Tensor]:
        """Every task's loss over ``groups`` (``decoder_groups`` of the tasks present)."""
        if not groups:  # no weighted task has a target here: a zero loss that still touches every weight
            return {NO_TASK: sum(p.sum() for p in self.parameters()) * 0.0}
        index = {t: i for i, t in enumerate(t for group in groups for t in group)}
        if self.layout == "causal":
            parts = [self._causal(batch, group, index) for group in groups]
        else:
            parts = self._encoder_decoder(batch, groups, index)
        losses = task_cross_entropy(parts, len(index))
        return {t: losses[i] for t, i in index.items()}

    def _task_rows(self, batch: dict[str, Any], group: list[str], index: dict[str, int]) -> torch.Tensor:
        """Each row's task index, for the rows of ``group`` stacked in its order."""
        return torch.cat([torch.full((batch[t]["labels"].size(0),), index[t], dtype=torch.long,
                                     device=batch[t]["labels"].device) for t in group])

    def _mask(self, mask: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """A padding mask [B, T] as the 4-D boolean mask transformers' SDPA attention takes ([B, 1, 1, T], or
        [B, 1, T, T] with the causal order): given one, transformers uses it as it is, where from [B, T] it would
        first ask the device whether any token is padding (``mask.all()``: a host sync per call). Other attention
        implementations get the [B, T] mask."""
        if self.model.config._attn_implementation != "sdpa":
            return mask
        keep = mask.bool()[:, None, None, :]
        if causal:
            order = torch.ones(mask.size(1), mask.size(1), dtype=torch.bool, device=mask.device).tril()
            keep = keep & order
        return keep

    def _causal(self, batch: dict[str, Any], group: list[str], index: dict[str, int]) -> tuple:
        ids = _stack([batch[t]["input_ids"] for t in group], self.pad)
        mask = _stack([batch[t]["attention_mask"] for t in group], 0)
        labels = _stack([batch[t]["labels"] for t in group], IGNORE)
        logits = self.model(input_ids=ids, attention_mask=self._mask(mask, causal=True), use_cache=False).logits
        return (*causal_shift(logits, labels), self._task_rows(batch, group, index))

    def _encoder_decoder(self, batch: dict[str, Any], groups: list[list[str]], index: dict[str, int]) -> list:
        """One encoder call (every task's inputs stacked, or the one-encoder layout's questions), then one decoder
        call per group over its rows of the encoder output."""
        order = [t for group in groups for t in group]
        if self.layout == "one_encoder":
            question = batch[QUESTION]
            ids, mask = question["input_ids"], self._mask(question["attention_mask"])
            rows = {t: batch[t]["rows"] for t in order}
        else:
            ids = _stack([batch[t]["input_ids"] for t in order], self.pad)
            mask = self._mask(_stack([batch[t]["attention_mask"] for t in order], 0))
        encoded = encode_questions(self.model, {"input_ids": ids, "attention_mask": mask})
        sizes = [batch[t]["labels"].size(0) for t in order]
        starts = dict(zip(order, itertools.accumulate(sizes, initial=0)))  # each task's first stacked row
        parts = []
        for group in groups:
            labels = _stack([batch[t]["labels"] for t in group], IGNORE)
            if self.layout == "one_encoder":
                take = torch.cat([rows[t] for t in group])
                states, states_mask = encoded[take], mask[take]
                decoder_ids = _stack([batch[t]["decoder_input_ids"] for t in group], self.pad)
            else:  # the group's rows are one slice of the stacked inputs: a view, no copy
                first, n = starts[group[0]], labels.size(0)
                states, states_mask = encoded[first:first + n], mask[first:first + n]
                decoder_ids = self.model.prepare_decoder_input_ids_from_labels(labels=labels)
            logits = self.model(encoder_outputs=(states,), attention_mask=states_mask,
                                decoder_input_ids=decoder_ids, use_cache=False).logits
            parts.append((logits, labels, self._task_rows(batch, group, index)))
        return parts


def reference_losses(model: torch.nn.Module, layout: str, batch: dict[str, Any],
                     tasks: list[str]) -> dict[str, torch.Tensor]:
    """One forward per task (``task_logits``) and ``token_cross_entropy``: what ``MultiTask``'s one pass must
    equal (the tests and ``bench/gpu.py``'s ``step_counts`` compare them on the same batch)."""
    question = batch.get(QUESTION)
    encoded = encode_questions(model, question) if layout == "one_encoder" else None
    return {t: token_cross_entropy(*task_logits(model, layout, batch[t], question, encoded))
            for t in tasks if batch[t] is not None}


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside DDP/FSDP and ``MultiTask`` wrappers."""
    while hasattr(module, "module"):
        module = module.module
    return module.model if isinstance(module, MultiTask) else module
