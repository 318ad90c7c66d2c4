"""The student's T5 layers rebuilt for bf16 training: the same weights and the same function as transformers' T5, in
fewer and faster operations.

``speed_up(model)`` changes a loaded T5-family student in place (its state dict, config and saved files stay
transformers' own):

- **Norms** (``T5LayerNorm``): one autograd function (``RMSNorm``) with a hand-written backward: fp32 statistics,
  output in the compute dtype (bf16 under autocast), so the next linear layers read it without a cast each
  (torch's own ``rms_norm`` has no fused CPU kernel: a composite of many more operations).
- **Feed-forward**: both input projections of the gated GELU from one matrix product; the GELU
  (``NewGELUActivation``, eight element-wise operations) as torch's fused ``gelu(approximate="tanh")`` (the same
  formula); no cast of the hidden state back to fp32 before ``wo`` (autocast would cast it to bf16 again).
- **Attention** (without a key/value cache, i.e. training and scoring; generation keeps transformers' forward):
  query, key and value from one matrix product (key and value from one in cross-attention); the relative position
  bias made once per stack, contiguous, in the compute dtype, with the decoder's causal mask folded in;
  cross-attention (no position bias in T5) gets the padding mask alone. SDPA then sees bf16 inputs throughout:
  transformers' ``sdpa`` passes an fp32 bias, permuted (stride = heads), combined with the mask again in every
  layer, which sends SDPA to its math kernel and runs the attention products in fp32.

Llama-family and Qwen2 students (SmolLM, TinyLlama, Qwen2.5) get the same norms, query/key/value (and their
biases) from one matrix product, and both MLP input projections from one; their attention stays transformers'
(SDPA, bf16 already: rotary positions, no trainable bias). Anything else (another architecture, a model already
changed) is left as it is: ``speed_up`` returns what it did.
Equality with the stock model is tested in fp32 (``tests/unit/test_kernels.py``).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F


class RMSNorm(torch.autograd.Function):
    """``weight * x / sqrt(mean(x^2) + eps)`` with fp32 statistics, returned in ``dtype``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
        xf = x.float()
        rstd = torch.rsqrt(xf.square().mean(-1, keepdim=True).add_(eps))
        normed = xf * rstd
        ctx.save_for_backward(normed, weight, rstd)  # the fp32 normed input: as large as x, one product less later
        ctx.input_dtype = x.dtype
        return (normed * weight).to(dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        normed, weight, rstd = ctx.saved_tensors
        g = grad.float()
        grad_weight = (g * normed).reshape(-1, normed.size(-1)).sum(0)
        gn = g * weight
        grad_x = (gn - normed * (gn * normed).mean(-1, keepdim=True)) * rstd
        return grad_x.to(ctx.input_dtype), grad_weight.to(weight.dtype), None, None


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast computes in on ``x``'s device, else ``x``'s own."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def _norm_forward(self: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon, compute_dtype(hidden_states))


def _gated_ff_forward(self: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    gate, linear = F.linear(hidden_states, torch.cat([self.wi_0.weight, self.wi_1.weight])).chunk(2, dim=-1)
    return self.wo(self.dropout(self.act(gate) * linear))


def _ff_forward(self: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return self.wo(self.dropout(self.act(self.wi(hidden_states))))


def _compute_bias(self: torch.nn.Module, query_length: int, key_length: int, device: Any = None,
                  past_seen_tokens: int = 0) -> torch.Tensor:
    """T5's relative position bias [1, H, Q, K], contiguous, in the compute dtype; for decoder self-attention the
    future positions already hold the dtype's minimum (the causal mask, applied once per stack)."""
    bias = type(self).compute_bias(self, query_length, key_length, device, past_seen_tokens)
    dtype = compute_dtype(self.relative_attention_bias.weight)
    bias = bias.to(dtype).contiguous()
    if self.is_decoder:
        position = torch.arange(key_length, device=bias.device)
        future = position[None, :] > (position[:query_length, None] + past_seen_tokens)
        bias = bias.masked_fill(future, torch.finfo(dtype).min)
    return bias


def fold_mask(bias: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The position bias with transformers' mask applied (bool, True = attend; or additive float): one additive
    mask for every layer of a stack."""
    if attention_mask is None:
        return bias
    if attention_mask.dtype == torch.bool:
        return bias.masked_fill(~attention_mask, torch.finfo(bias.dtype).min)
    return bias + attention_mask.to(bias.dtype)


def t5_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None) -> torch.Tensor:
    """Attention [B, T, H * D] of query/key/value [B, H, T, D]; ``mask``: additive (the folded position bias),
    boolean (True = attend) or None."""
    if mask is not None and mask.is_floating_point():
        mask = mask.to(query.dtype)
    if mask is not None and mask.requires_grad and query.device.type != "cuda":
        # The CPU's SDPA kernel cannot return a gradient for the mask: it would fall back to its math kernel, which
        # computes in fp32. The same attention in the compute dtype, by hand (CUDA's memory-efficient kernel
        # returns the bias's gradient itself).
        scores = torch.matmul(query, key.transpose(-1, -2))
        if scaling not in (None, 1.0):
            scores = scores * scaling
        probs = torch.softmax(scores + mask, dim=-1, dtype=torch.float32).to(value.dtype)
        out = torch.matmul(F.dropout(probs, dropout, module.training), value)
    else:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).reshape(out.size(0), out.size(2), -1)


def _heads(x: torch.Tensor, parts: int, heads: int, dim: int) -> tuple[torch.Tensor, ...]:
    """[B, T, parts * H * D] -> ``parts`` tensors [B, H, T, D] (views)."""
    return x.view(x.size(0), x.size(1), parts, heads, dim).permute(2, 0, 3, 1, 4).unbind(0)


def _attention_forward(self: torch.nn.Module, hidden_states: torch.Tensor, mask: Any = None,
                       key_value_states: torch.Tensor | None = None, position_bias: torch.Tensor | None = None,
                       past_key_values: Any = None, **kwargs: Any) -> tuple:
    """``T5Attention.forward`` without a key/value cache: query, key and value from one matrix product (self-
    attention; key and value from one for cross-attention), ``t5_attention``; the stack's first layer folds the
    mask into the position bias it passes on. With a cache (generation) or ``output_attentions``, transformers'
    own forward."""
    if past_key_values is not None or kwargs.get("output_attentions"):
        return type(self).forward(self, hidden_states, mask, key_value_states, position_bias, past_key_values,
                                  **kwargs)
    heads, dim = self.n_heads, self.key_value_proj_dim
    if key_value_states is None:
        query, key, value = _heads(F.linear(hidden_states, torch.cat([self.q.weight, self.k.weight,
                                                                      self.v.weight])), 3, heads, dim)
    else:
        (query,) = _heads(self.q(hidden_states), 1, heads, dim)
        key, value = _heads(F.linear(key_value_states, torch.cat([self.k.weight, self.v.weight])), 2, heads, dim)
    if position_bias is None and self.has_relative_attention_bias:  # the stack's first layer: once for all
        position_bias = fold_mask(self.compute_bias(query.size(2), key.size(2), device=query.device), mask)
    # The later layers get the first one's bias, the mask already in it; cross-attention has none, only the mask.
    out = t5_attention(self, query, key, value, mask if position_bias is None else position_bias,
                       self.dropout if self.training else 0.0, self.scaling)
    return self.o(out), position_bias, None


def _llama_attention_forward(self: torch.nn.Module, hidden_states: torch.Tensor,
                             position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                             attention_mask: torch.Tensor | None = None, past_key_values: Any = None,
                             **kwargs: Any) -> tuple:
    """``LlamaAttention.forward`` / ``Qwen2Attention.forward`` (transformers 5) with query, key and value from one
    matrix product (their biases too, where the model has them); the rest as transformers does it."""
    import sys

    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    module = sys.modules[type(self).__module__]  # the model's own rotary helper and eager attention
    input_shape = hidden_states.shape[:-1]
    q_dim = self.q_proj.out_features
    kv_dim = self.k_proj.out_features
    weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
    bias = None if self.q_proj.bias is None else torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
    query, key, value = F.linear(hidden_states, weight, bias).split([q_dim, kv_dim, kv_dim], dim=-1)
    shape = (*input_shape, -1, self.head_dim)
    query, key, value = (x.view(shape).transpose(1, 2) for x in (query, key, value))
    cos, sin = position_embeddings
    query, key = module.apply_rotary_pos_emb(query, key, cos, sin)
    if past_key_values is not None:
        key, value = past_key_values.update(key, value, self.layer_idx)
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                      module.eager_attention_forward)
    if getattr(self, "sliding_window", None) is not None:
        kwargs["sliding_window"] = self.sliding_window
    out, weights = attention(self, query, key, value, attention_mask,
                             dropout=0.0 if not self.training else self.attention_dropout, scaling=self.scaling,
                             **kwargs)
    return self.o_proj(out.reshape(*input_shape, -1).contiguous()), weights


def _llama_mlp_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``LlamaMLP.forward``: both input projections from one matrix product."""
    weight = torch.cat([self.gate_proj.weight, self.up_proj.weight])
    bias = None if self.gate_proj.bias is None else torch.cat([self.gate_proj.bias, self.up_proj.bias])
    gate, up = F.linear(x, weight, bias).chunk(2, dim=-1)
    return self.down_proj(self.act_fn(gate) * up)


def _llama_family() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(attention, MLP, norm) classes of the causal families rebuilt here: Llama (SmolLM, TinyLlama) and Qwen2."""
    from transformers.models.llama import modeling_llama as llama
    from transformers.models.qwen2 import modeling_qwen2 as qwen2

    return ((llama.LlamaAttention, qwen2.Qwen2Attention), (llama.LlamaMLP, qwen2.Qwen2MLP),
            (llama.LlamaRMSNorm, qwen2.Qwen2RMSNorm))


def speed_up(model: torch.nn.Module) -> list[str]:
    """Rebuild a T5-family student's layers, or a Llama/Qwen2 one's, in place (the module docstring); returns what
    changed, e.g. ``["norms", "feed-forward", "attention"]``, or [] for a model it does not know."""
    from transformers.activations import NewGELUActivation
    from transformers.models.t5 import modeling_t5

    if getattr(model, "_tinyllm_kernels", None):
        return []
    attentions, mlps, norms = _llama_family()
    done = []
    stacks = [getattr(model, name, None) for name in ("encoder", "decoder")]
    t5 = all(isinstance(s, modeling_t5.T5Stack) for s in stacks)
    for module in model.modules():
        if (t5 and isinstance(module, modeling_t5.T5LayerNorm)) or isinstance(module, norms):
            module.forward = types.MethodType(_norm_forward, module)
            done.append("norms")
        elif t5 and isinstance(module, (modeling_t5.T5DenseGatedActDense, modeling_t5.T5DenseActDense)):
            if isinstance(module.act, NewGELUActivation):
                module.act = torch.nn.GELU(approximate="tanh")
            gated = isinstance(module, modeling_t5.T5DenseGatedActDense)
            module.forward = types.MethodType(_gated_ff_forward if gated else _ff_forward, module)
            done.append("feed-forward")
        elif t5 and isinstance(module, modeling_t5.T5Attention):
            module.forward = types.MethodType(_attention_forward, module)
            if module.has_relative_attention_bias:
                module.compute_bias = types.MethodType(_compute_bias, module)
            done.append("attention")
        elif isinstance(module, mlps):
            module.forward = types.MethodType(_llama_mlp_forward, module)
            done.append("feed-forward")
        elif isinstance(module, attentions):
            module.forward = types.MethodType(_llama_attention_forward, module)
            done.append("attention")
    model._tinyllm_kernels = [part for part in ("norms", "feed-forward", "attention") if part in done]
    return model._tinyllm_kernels
