"""The cost model behind ``--dry-run``: model sizes, token counts and GPU-hours, from published figures.

Nothing here loads weights. A model's size is counted on the ``meta`` device from its ``config.json`` (a
local directory, or the Hugging Face cache with ``local_files_only``), else read from its name (``...-7b``,
``flan-t5-large``), else unknown. Throughput is either the user's (``--throughput NAME=TOKENS_PER_S``,
measured on their own prompts) or the roofline of an H100-class GPU at a utilisation calibrated on a
published figure (``docs/capacity.md`` cites them):

- **Teacher decoding**: 2 x params FLOPs per generated token at ``DECODE_UTILISATION`` of ``PEAK_FLOPS`` per
  GPU; 0.2 reproduces the ~12,500 generated tokens/s published for vLLM with Llama-3.1-8B on one H100.
- **Teacher prefill** (the few-shot prompts, often 5-10x longer than the rationale): 2 x params FLOPs per
  prompt token at ``PREFILL_UTILISATION`` (compute-bound).
- **The ``hf`` engine**: ``HF_SLOWDOWN`` times slower than vLLM (vLLM's launch post measured 14-24x higher
  throughput than transformers' ``generate``; the low end, since this project's HF engine batches).
- **Student training**: 6 x params FLOPs per trained token at ``TRAIN_MFU``, the model FLOPs utilisation
  ``bench/gpu.py`` measured for FLAN-T5-base and -large shapes on one H200 (0.04-0.07, docs/gpu.md).

These are planning figures (the ratio of two runs' estimates means more than either alone); the README's
benchmarks and ``bench/gpu.py`` give measured ones.
"""

from __future__ import annotations

import re
from pathlib import Path

PEAK_FLOPS = 989e12  # H100 SXM, dense bf16 (NVIDIA's datasheet: 1,979 TFLOPS with sparsity)
DECODE_UTILISATION = 0.2
PREFILL_UTILISATION = 0.5
TRAIN_MFU = 0.05  # measured (bench/gpu.py, H200, 2026-12-04): 0.042-0.066 eager; the target is 0.3
HF_SLOWDOWN = 14.0
CHARS_PER_TOKEN = 4.0  # English text in a BPE/SentencePiece vocabulary: about 4 characters per token

# Published parameter counts of families whose names do not carry their size.
_NAMED_SIZES = {"t5-small": 60e6, "t5-base": 220e6, "t5-large": 770e6, "t5-3b": 2.8e9, "t5-11b": 11e9,
                "flan-t5-small": 77e6, "flan-t5-base": 248e6, "flan-t5-large": 783e6, "flan-t5-xl": 2.85e9,
                "flan-t5-xxl": 11.3e9, "gpt2": 124e6, "gpt2-medium": 355e6, "gpt2-large": 774e6, "gpt2-xl": 1.5e9}
_SIZE_IN_NAME = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)


def tokens(chars: int) -> int:
    """Tokens of ``chars`` characters of text (``CHARS_PER_TOKEN``)."""
    return round(chars / CHARS_PER_TOKEN)


def model_params(model: str, trust_remote_code: bool = False) -> tuple[float | None, str]:
    """(parameters, how they were found) of a model, without loading its weights; ``(None, why)`` if unknown."""
    config_file = _local_config(model)
    if config_file is not None:
        counted = _count_on_meta(config_file.parent, trust_remote_code)
        if counted:
            return counted, "counted from its config.json"
    base = model.rstrip("/").rsplit("/", 1)[-1].lower()
    if base in _NAMED_SIZES:
        return _NAMED_SIZES[base], "published size of its family"
    found = _SIZE_IN_NAME.findall(base)
    if found:
        value, unit = found[-1]
        return float(value) * (1e9 if unit.lower() == "b" else 1e6), "read from its name"
    return None, "unknown (no local config.json and no size in its name)"


def _local_config(model: str) -> Path | None:
    from tinyllm_ray import model_files

    if model_files.is_model_file(model):  # a GGUF file or package: its conversion, when one is cached
        folder = model_files.cached(model)
        return Path(folder) / "config.json" if folder else None
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path / "config.json"
    try:  # a hub id the user downloaded before: the cache, never the network
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # noqa: BLE001 -- not a valid repo id: fall back to the name
        return None
    return Path(cached) if isinstance(cached, str) else None


def _count_on_meta(directory: Path, trust_remote_code: bool) -> float | None:
    """Parameters of the architecture in ``directory``'s config, built on the meta device (no memory, no weights)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        config = AutoConfig.from_pretrained(directory, trust_remote_code=trust_remote_code)
        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        with torch.device("meta"):
            model = auto.from_config(config, trust_remote_code=trust_remote_code)
        return float(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 -- an architecture transformers cannot build: fall back to the name
        return None


def teacher_seconds(params: float | None, num_gpus: float, engine: str, prompt_tokens: int, new_tokens: int,
                    given: float | None = None) -> float | None:
    """Seconds one replica takes for these tokens: ``given`` generated tokens/s, else the roofline estimate
    (GPU teachers only; ``None`` when the size is unknown or the teacher runs on CPUs)."""
    if given:
        return new_tokens / given
    if params is None or num_gpus <= 0:
        return None
    flops = PEAK_FLOPS * num_gpus
    seconds = 2 * params * prompt_tokens / (flops * PREFILL_UTILISATION)
    seconds += 2 * params * new_tokens / (flops * DECODE_UTILISATION)
    return seconds * (HF_SLOWDOWN if engine == "hf" else 1.0)


def train_gpu_seconds(params: float | None, trained_tokens: int, given: float | None = None) -> float | None:
    """GPU-seconds to train on ``trained_tokens`` (``given``: tokens/s per GPU), ``None`` when unknown."""
    if given:
        return trained_tokens / given
    if params is None:
        return None
    return 6 * params * trained_tokens / (PEAK_FLOPS * TRAIN_MFU)


def published_throughput() -> dict[str, float]:
    """The calibration: what the roofline gives for Llama-3.1-8B (8.03e9 parameters) on one H100, decoding."""
    return {"llama_3_1_8b_h100_tokens_per_s": round(PEAK_FLOPS * DECODE_UTILISATION / (2 * 8.03e9))}
