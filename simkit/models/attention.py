"""Faster self-attention for the two backbones, computing what transformers' modules compute.

**RoFormer.** transformers' ``RoFormerSelfAttention`` applies RoPE with about a dozen tensor
ops per layer (two stacks of sin / cos, negations, strided copies, four products) and
computes attention as matmul, divide, add, softmax, matmul. On a small model over short
texts those element-wise kernels cost as much as the linear layers.
:class:`FastRoFormerSelfAttention` keeps the module's parameters and interface and changes:

* **RoPE as one complex product.** A pair ``(a, b)`` of adjacent features rotated by θ is
  ``(a cos θ - b sin θ, b cos θ + a sin θ)``, the product of ``a + ib`` and ``e^{iθ}``:
  the same four products and two sums, so the result equals transformers' formula
  (tested to float32 rounding, gradients too), for the encoder, the trainer and the
  KV-cached decoder alike.
* **Fused attention in inference.** Without training, a cache, cross-attention or returned
  attention weights, scores go through ``scaled_dot_product_attention`` with the same
  additive mask and the same 1/sqrt(head size) scale; anything else falls back to the
  parent's attention code, so training (attention dropout) and generation give the same
  results as before.

**One q/k/v product** (:func:`fuse_qkv`, both backbones). Frozen inference copies (the int8
encoder) get one linear layer of the stacked query / key / value weights: one matrix
product and, in dynamic int8, one activation quantisation where there were three. BERT's
attention itself is already transformers' SDPA; :class:`FusedQKVBertSelfAttention` only
swaps the projection.

>>> use_fast_attention(RoFormerModel(config))                  # doctest: +SKIP
>>> fuse_qkv(copy.deepcopy(model))                             # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.bert.modeling_bert import (
    ALL_ATTENTION_FUNCTIONS,
    BertSelfAttention,
    eager_attention_forward,
)
from transformers.models.roformer.modeling_roformer import RoFormerSelfAttention


def _rotate(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """``x`` (..., D) with adjacent feature pairs rotated by ``rotation`` (complex, ..., D/2)."""
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotation).flatten(-2)


def _exporting() -> bool:
    # ONNX has no complex tensors, and ONNX Runtime fuses transformers' attention pattern
    # itself: an export records the parent's code.
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_exporting())


def _renamed_cache(cache, kwargs: dict):
    # The parents' forward takes the cache under its deprecated name "past_key_values" too
    # (a decorator renames it); an override sees the old name in kwargs and must do the same.
    old = kwargs.pop("past_key_values", None)
    return cache if cache is not None else old


def _complex_ok(x: torch.Tensor) -> bool:
    # view_as_complex needs float32 / float64 pairs that are adjacent in memory, with every
    # other stride even; bf16 (no complex type) and odd layouts take transformers' formula.
    return (x.dtype in (torch.float32, torch.float64) and x.stride(-1) == 1
            and all(s % 2 == 0 for s in x.stride()[:-1]) and x.storage_offset() % 2 == 0)


class FastRoFormerSelfAttention(RoFormerSelfAttention):
    """``RoFormerSelfAttention`` with one-product RoPE and, in inference, fused attention."""

    @staticmethod
    def apply_rotary_position_embeddings(
        sinusoidal_pos: torch.Tensor, query_layer: torch.Tensor, key_layer: torch.Tensor,
        value_layer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        layers = [t for t in (query_layer, key_layer, value_layer) if t is not None]
        if (_exporting() or sinusoidal_pos.dtype != query_layer.dtype
                or not all(_complex_ok(t) for t in layers)):
            return RoFormerSelfAttention.apply_rotary_position_embeddings(
                sinusoidal_pos, query_layer, key_layer, value_layer)
        sin, cos = sinusoidal_pos.chunk(2, dim=-1)  # transformers' layout: sin half, cos half
        rotation = torch.complex(cos, sin)
        return tuple(_rotate(t, rotation) for t in layers)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                sinusoidal_pos: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None, cache=None,
                output_attentions: bool = False,
                **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        cache = _renamed_cache(cache, kwargs)
        if (self.training or cache is not None or encoder_hidden_states is not None
                or output_attentions or sinusoidal_pos is None or _exporting()):
            return super().forward(hidden_states, attention_mask=attention_mask,
                                   sinusoidal_pos=sinusoidal_pos,
                                   encoder_hidden_states=encoder_hidden_states, cache=cache,
                                   output_attentions=output_attentions, **kwargs)
        shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
        fused = self._modules.get("qkv")
        if fused is not None:
            projected = fused(hidden_states).split(self.all_head_size, dim=-1)
        else:
            projected = (proj(hidden_states) for proj in (self.query, self.key, self.value))
        q, k, v = (t.view(shape).transpose(1, 2) for t in projected)
        if self.rotary_value:
            q, k, v = self.apply_rotary_position_embeddings(sinusoidal_pos, q, k, v)
        else:
            q, k = self.apply_rotary_position_embeddings(sinusoidal_pos, q, k)
        if attention_mask is not None:
            attention_mask = attention_mask.to(q.dtype)
        context = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        return context.transpose(1, 2).reshape(*hidden_states.shape[:-1], self.all_head_size), None


class FusedQKVBertSelfAttention(BertSelfAttention):
    """``BertSelfAttention`` that projects query, key and value with one ``qkv`` layer when it
    has one (see :func:`fuse_qkv`) and runs inference; otherwise the parent's code."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache=None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        cache = _renamed_cache(cache, kwargs)
        fused = self._modules.get("qkv")
        if fused is None or self.training or cache is not None or _exporting():
            return super().forward(hidden_states, attention_mask=attention_mask, cache=cache,
                                   **kwargs)
        input_shape = hidden_states.shape[:-1]
        shape = (*input_shape, -1, self.attention_head_size)
        q, k, v = (t.view(shape).transpose(1, 2)
                   for t in fused(hidden_states).split(self.all_head_size, dim=-1))
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                       eager_attention_forward)
        out, weights = attend(self, q, k, v, attention_mask, dropout=0.0, scaling=self.scaling,
                              **kwargs)
        return out.reshape(*input_shape, -1).contiguous(), weights


def use_fast_attention(model: nn.Module) -> nn.Module:
    """Switch every ``RoFormerSelfAttention`` in ``model`` to the fast subclass, in place.

    Only the class changes: parameters, buffers and state-dict keys stay as they are, so
    checkpoints load and save exactly as before."""
    for module in model.modules():
        if type(module) is RoFormerSelfAttention:
            module.__class__ = FastRoFormerSelfAttention
    return model


def fuse_qkv(model: nn.Module) -> nn.Module:
    """Give each self-attention module of ``model`` one projection for query, key and value
    (a ``qkv`` linear layer of their stacked weights), in place; inference then runs one
    matrix product where it ran three. For frozen inference copies only (the int8 encoder):
    ``qkv`` is a snapshot that training would leave stale (so it takes no gradient), and it
    adds state-dict keys. ``query`` / ``key`` / ``value`` stay for the parent's code paths.

    Under dynamic int8's per-tensor weight scale the three then share one scale: on the
    bundled model the min cosine to fp32 moved from 0.99994 to 0.99991; per-channel scales
    measured slower."""
    for m in model.modules():
        if type(m) is BertSelfAttention:
            m.__class__ = FusedQKVBertSelfAttention
        if not isinstance(m, (FastRoFormerSelfAttention, FusedQKVBertSelfAttention)):
            continue
        parts = (m.query, m.key, m.value)
        w = parts[0].weight
        bias = [p.bias if p.bias is not None else torch.zeros_like(p.weight[:, 0]) for p in parts]
        qkv = nn.Linear(w.shape[1], sum(p.out_features for p in parts), device=w.device,
                        dtype=w.dtype)
        with torch.no_grad():
            qkv.weight.copy_(torch.cat([p.weight for p in parts]))
            qkv.bias.copy_(torch.cat(bias))
        m.qkv = qkv.requires_grad_(False)
    return model
