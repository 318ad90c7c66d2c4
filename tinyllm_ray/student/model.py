"""The student model: loading (seq2seq or causal), one forward per task, and the multi-task module.

``task_logits`` is the one forward of a task batch built by ``batches.collate`` (or by the scorers),
returning logits aligned with the labels for every layout: the training loss and rank classification
both use it. ``MultiTask`` wraps the HF model so one ``forward(batch)`` returns every task's loss: that is
the module Ray Train wraps in DDP/FSDP (one wrapped forward per micro-batch, so gradients sync once).

In the one-encoder layout the encoder runs once per batch and each task's decoder pass reads its rows of
that encoder output; the prefix layouts run the whole model once per task.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from tinyllm_ray import prompts
from tinyllm_ray.config import Config
from tinyllm_ray.devices import is_encoder_decoder  # the rule lives there; the pipeline imports it from here
from tinyllm_ray.student.batches import QUESTION, Encoder, layout_of
from tinyllm_ray.student.loss import causal_shift, token_cross_entropy


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


class MultiTask(torch.nn.Module):
    """``forward(batch) -> {task: loss}`` over the tasks present in a collated batch.

    ``compile`` (``train.compile``): ``default`` or ``reduce-overhead`` runs this forward (every task's pass and
    loss) through ``torch.compile``; the HF model inside stays the plain module, so evaluation, generation and
    saving use it as before. Shapes that vary between batches make torch compile a second, shape-generic graph
    (its automatic dynamic shapes) rather than one per shape; ``collate``'s fixed-shape padding keeps their count
    (and, with ``reduce-overhead``, the CUDA graphs recorded) small."""

    def __init__(self, model: torch.nn.Module, layout: str, tasks: list[str], compile: str = "off"):
        super().__init__()
        self.model, self.layout, self.tasks, self.compile_mode = model, layout, tasks, compile
        # A plain attribute, not a submodule: the compiled function holds no parameters of its own.
        self._compiled = None if compile == "off" else torch.compile(
            self._losses, mode=None if compile == "default" else compile)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self._compiled is None:
            return self._losses(batch)
        if self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the previous step's graph outputs are done
        # Without the row count (a Python int): torch would guard on it and compile again for a smaller batch.
        return self._compiled({k: v for k, v in batch.items() if k != "rows"})

    def _losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        present = [t for t in self.tasks if batch[t] is not None]
        losses = {}
        if self.layout == "one_encoder" and present:
            losses = self._one_encoder(batch, present)
        else:
            for task in present:
                logits, labels = task_logits(self.model, self.layout, batch[task])
                losses[task] = token_cross_entropy(logits, labels)
        if not losses:  # no weighted task has a target here: a zero loss that still touches every weight
            losses[NO_TASK] = sum(p.sum() for p in self.parameters()) * 0.0
        return losses

    def _one_encoder(self, batch: dict[str, Any], present: list[str]) -> dict[str, torch.Tensor]:
        """One encoder pass, then one decoder pass per task over that task's rows of the encoder output.

        (Stacking every task's rows into a single decoder pass, padded to the longest target, measured slower:
        the short answer rows then cost as much as rationale rows.)"""
        question = batch[QUESTION]
        encoded = encode_questions(self.model, question)
        return {task: token_cross_entropy(*task_logits(self.model, self.layout, batch[task], question, encoded))
                for task in present}


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside DDP/FSDP and ``MultiTask`` wrappers."""
    while hasattr(module, "module"):
        module = module.module
    return module.model if isinstance(module, MultiTask) else module
