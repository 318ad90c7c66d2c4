"""Where a model runs and in what precision, decided once; and the two facts about a model that decide how
it is fed (encoder-decoder or decoder-only, and the id its batches are padded with).

Every stage that loads a model asks here: the student's training loop and its valid scoring, the evaluation
stage, and both teacher engines (HF and vLLM).

- ``device_for(num_gpus)``: CUDA when the caller was given GPUs *and* this process sees CUDA, else the CPU.
  Ray Train workers take the device Ray assigned them instead (``train_device``).
- ``auto_is_bf16(device)``: what ``auto`` means for every precision setting: bf16 on CUDA, fp32 elsewhere.
- ``use_bf16(precision, device)``: the student's ``train.precision`` (``auto``/``bf16``/``fp32``) as bf16
  autocast on or off, for training and scoring alike; ``bf16_autocast`` is that context.
- ``weights_dtype(dtype, device)`` / ``torch_dtype``: a teacher's ``dtype`` (``auto`` or a dtype name) as the
  name vLLM takes or the ``torch.dtype`` transformers takes.
- ``pad_id(tokenizer)``: the tokenizer's pad id, else its eos id.
- ``is_encoder_decoder(model)``: from a model name or path (its config is read), a config, or a loaded model.
- ``plain_generation_config(model)`` / ``plain_generation``: a model's shipped ``generation_config`` cut down to its
  special-token ids, so its sampling defaults (``do_sample``, ``temperature``, ``repetition_penalty``, ...) never
  change what a greedy teacher or the student's greedy answers decode.

No Ray and no project imports at module level: the teachers and the student both import it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from transformers import AutoConfig, GenerationConfig, PretrainedConfig

BF16, FP32 = "bfloat16", "float32"


def device_for(num_gpus: float) -> torch.device:
    """The device of a model given ``num_gpus`` GPUs (a Ray actor's or task's share): CUDA only when it has
    some and CUDA is available here, so a GPU setting on a machine without one falls back to the CPU."""
    return torch.device("cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu")


def train_device() -> torch.device:
    """A Ray Train worker's device: the GPU Ray Train assigned it (``use_gpu``), else the CPU."""
    import ray.train.torch  # here: only training workers need Ray Train

    return ray.train.torch.get_device()


def auto_is_bf16(device: torch.device) -> bool:
    """What ``auto`` precision means for the student and the teachers alike: bf16 on CUDA, fp32 elsewhere."""
    return device.type == "cuda"


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether the student autocasts to bf16 under ``train.precision`` (``auto``, ``bf16``, ``fp32``) on
    ``device``; weights and optimizer state stay fp32 either way."""
    return precision == "bf16" or (precision == "auto" and auto_is_bf16(device))


def bf16_autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """The bf16 autocast context on ``device`` (a no-op context when not ``enabled``)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def weights_dtype(dtype: str, device: torch.device) -> str:
    """A teacher's weights dtype by name (``auto``, ``float32``, ``bfloat16``, ``float16``), ``auto`` resolved."""
    if dtype == "auto":
        return BF16 if auto_is_bf16(device) else FP32
    return dtype


def torch_dtype(dtype: str, device: torch.device) -> torch.dtype:
    return getattr(torch, weights_dtype(dtype, device))


def pick_device_and_dtype(num_gpus: float, dtype: str) -> tuple[torch.device, torch.dtype]:
    """A teacher's device and weights dtype (``device_for`` and ``torch_dtype``)."""
    device = device_for(num_gpus)
    return device, torch_dtype(dtype, device)


def pad_id(tokenizer: Any) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its eos token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def is_encoder_decoder(model: str | os.PathLike | PretrainedConfig | Any, trust_remote_code: bool = False) -> bool:
    """Whether a model is an encoder-decoder (T5) rather than decoder-only. ``model``: a name or path (its
    config is read, weights are not), a transformers config, or a loaded model (its ``.config``)."""
    if isinstance(model, (str, os.PathLike)):
        model = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    config = model if isinstance(model, PretrainedConfig) else getattr(model, "config", model)
    return bool(getattr(config, "is_encoder_decoder", False))


# What a generation config may keep of a model's own: which tokens start, end and pad a sequence.
TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def plain_generation_config(model: Any) -> tuple[GenerationConfig, dict[str, Any]]:
    """A generation config with only the special-token ids of ``model.generation_config``, and what else the model
    shipped (its sampling and penalty defaults, dropped). transformers 5 fills every value a ``generate`` call
    leaves unset from the model's own config, so a shipped ``repetition_penalty`` or ``top_k`` would otherwise
    change a greedy teacher's text, and a shipped ``do_sample: true`` would make the student's answers random."""
    shipped = getattr(model, "generation_config", None) or GenerationConfig()
    config = getattr(model, "config", None)
    tokens = {f: value for f in TOKEN_FIELDS
              if (value := getattr(shipped, f, None) if getattr(shipped, f, None) is not None
                  else getattr(config, f, None)) is not None}
    dropped = {k: v for k, v in shipped.to_diff_dict().items()
               if k not in TOKEN_FIELDS and not k.startswith("_") and k not in ("transformers_version", "use_cache",
                                                                                 "output_attentions",
                                                                                 "output_hidden_states")}
    return GenerationConfig(**tokens), dropped


@contextlib.contextmanager
def plain_generation(model: Any) -> Iterator[None]:
    """``model.generation_config`` as ``plain_generation_config`` makes it, for the ``generate`` calls inside; the
    model's own is put back after (a student being trained keeps it in its checkpoints)."""
    shipped = model.generation_config
    model.generation_config = plain_generation_config(model)[0]
    try:
        yield
    finally:
        model.generation_config = shipped
