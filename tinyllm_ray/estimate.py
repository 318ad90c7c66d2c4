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
- **Student training**: ``step_flops`` (the one FLOPs formula: forward and backward = 3 x the forward's matrix
  products, attention scores and cross-attention keys/values included, from the student's ``config.json``;
  6 x params per trained token when its config is not at hand) at ``TRAIN_MFU``, the model FLOPs utilisation
  ``bench/gpu.py`` measures by the same formula.

These are planning figures (the ratio of two runs' estimates means more than either alone); the README's
benchmarks and ``bench/gpu.py`` give measured ones.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PEAK_FLOPS = 989e12  # H100 SXM, dense bf16 (NVIDIA's datasheet: 1,979 TFLOPS with sparsity)
DECODE_UTILISATION = 0.2
PREFILL_UTILISATION = 0.5
TRAIN_MFU = 0.05  # the eager step's measured utilisation (docs/gpu.md), until a faster step is measured on a GPU
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


def train_gpu_seconds(params: float | None, trained_tokens: int, given: float | None = None,
                      flops: float | None = None) -> float | None:
    """GPU-seconds to train on ``trained_tokens`` (``given``: tokens/s per GPU; ``flops``: the training's model
    FLOPs by ``step_flops``, else 6 x ``params`` per token), ``None`` when unknown."""
    if given:
        return trained_tokens / given
    if flops is None and params is None:
        return None
    return (flops if flops is not None else 6 * params * trained_tokens) / (PEAK_FLOPS * TRAIN_MFU)


@dataclasses.dataclass(frozen=True)
class Shape:
    """What a transformer's training FLOPs depend on, from its config: widths, layers (``encoder_layers`` = 0 for a
    decoder-only model), vocabulary, and whether its feed-forward is gated (three matrices, not two)."""

    d_model: int
    d_ff: int
    q_dim: int  # attention heads x head size
    kv_dim: int  # key/value heads x head size (grouped-query attention: smaller than q_dim)
    encoder_layers: int
    decoder_layers: int
    vocab: int
    gated: bool

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Shape | None:
        """A T5-family or Llama-family ``config.json`` (as a dict); None for another layout."""
        if "d_kv" in config and "num_layers" in config:  # T5, mT5, FLAN-T5
            q = config["num_heads"] * config["d_kv"]
            act = str(config.get("feed_forward_proj", "relu"))
            return cls(config["d_model"], config["d_ff"], q, q, config["num_layers"],
                       config.get("num_decoder_layers") or config["num_layers"], config["vocab_size"],
                       act.startswith("gated"))
        if "hidden_size" in config and "num_hidden_layers" in config and "intermediate_size" in config:
            heads = config["num_attention_heads"]
            head = config.get("head_dim") or config["hidden_size"] // heads
            kv = config.get("num_key_value_heads") or heads
            return cls(config["hidden_size"], config["intermediate_size"], heads * head, kv * head, 0,
                       config["num_hidden_layers"], config["vocab_size"], True)
        return None

    def _layer(self, tokens: int, keys: int) -> float:
        """One self-attention + feed-forward layer's forward matrix products over ``tokens`` tokens attending
        to ``keys`` positions: projections and the scores (QK^T) and their weighted sum (PV)."""
        projections = 2 * tokens * self.d_model * (2 * self.q_dim + 2 * self.kv_dim)
        scores = 2 * 2 * tokens * keys * self.q_dim
        feed_forward = 2 * tokens * self.d_model * self.d_ff * (3 if self.gated else 2)
        return projections + scores + feed_forward

    def forward_flops(self, rows: int, source: int, target: int, encoder: bool = True) -> float:
        """FLOPs of one forward over ``rows`` sequences: an encoder-decoder reads ``source`` tokens (in its
        encoder, unless ``encoder`` is False: an encoder output reused) and decodes ``target``; a decoder-only
        model reads ``source + target`` tokens. Causal attention is counted in full (every query x every key), as
        PaLM's appendix and nanoGPT's ``estimate_mfu`` count it."""
        if self.encoder_layers == 0:
            tokens = source + target
            return rows * (self.decoder_layers * self._layer(tokens, tokens) + 2 * tokens * self.d_model * self.vocab)
        enc = self.encoder_layers * self._layer(source, source) if encoder else 0.0
        cross = (2 * target * self.d_model * 2 * self.q_dim  # query and output projections
                 + 2 * source * self.d_model * 2 * self.kv_dim  # keys and values over the encoder's tokens
                 + 2 * 2 * target * source * self.q_dim)  # scores and weighted sum
        dec = self.decoder_layers * (self._layer(target, target) + cross)
        return rows * (enc + dec + 2 * target * self.d_model * self.vocab)


def step_flops(shape: Shape, rows: int, source: int, targets: Sequence[int], one_encoder: bool = False) -> float:
    """Model FLOPs of one training step (forward + backward = 3 x forward) of the multi-task student: ``rows``
    questions of ``source`` input tokens, one target per task (``targets``, tokens). Prefix mode encodes each
    task's input; ``one_encoder`` encodes the question once for all. The figure the MFU is computed from
    (``bench/gpu.py``) and the dry run's student GPU-hours (``dry_run.py``) are made with this."""
    once = one_encoder and shape.encoder_layers > 0
    forward = sum(shape.forward_flops(rows, source, t, encoder=not once) for t in targets)
    if once:
        forward += rows * shape.encoder_layers * shape._layer(source, source)
    return 3.0 * forward


def model_shape(model: str) -> Shape | None:
    """The ``Shape`` of a model whose ``config.json`` is at hand (the rules of ``model_params``), else None."""
    import json

    config_file = _local_config(model)
    if config_file is None:
        return None
    try:
        return Shape.of(json.loads(config_file.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def published_throughput() -> dict[str, float]:
    """The calibration: what the roofline gives for Llama-3.1-8B (8.03e9 parameters) on one H100, decoding."""
    return {"llama_3_1_8b_h100_tokens_per_s": round(PEAK_FLOPS * DECODE_UTILISATION / (2 * 8.03e9))}
