"""The fast attention modules compute what transformers' modules compute."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import RoFormerConfig, RoFormerModel
from transformers.models.bert.modeling_bert import BertSelfAttention
from transformers.models.roformer.modeling_roformer import (
    RoFormerSelfAttention,
    RoFormerSinusoidalPositionalEmbedding,
)

import simkit.models.attention as attention_module
from simkit.models.attention import (
    FastRoFormerSelfAttention,
    FusedQKVBertSelfAttention,
    fuse_qkv,
    use_fast_attention,
)
from simkit.models.simbert import build_backbone, unilm_attention_mask

CONFIG = dict(vocab_size=50, embedding_size=32, hidden_size=32, num_hidden_layers=2,
              num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)


def _positions(length: int, dim: int) -> torch.Tensor:
    """transformers' sinusoid table, shaped as RoFormerEncoder passes it: (1, 1, L, D)."""
    return RoFormerSinusoidalPositionalEmbedding(64, dim).create_weight()[:length][None, None]


@pytest.mark.parametrize("with_value", [False, True])
def test_rotary_equals_transformers_formula(with_value):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 11, 16, generator=g) for _ in range(3))
    pos = _positions(11, 16)
    args = (pos, q, k, v) if with_value else (pos, q, k)
    ref = RoFormerSelfAttention.apply_rotary_position_embeddings(*args)
    got = FastRoFormerSelfAttention.apply_rotary_position_embeddings(*args)
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_rotary_per_sequence_positions_and_odd_layouts():
    # The decoder rotates one token per sequence at its own position: (B, 1, 1, D) tables.
    g = torch.Generator().manual_seed(1)
    table = _positions(40, 16)[0, 0]
    pos = table[torch.tensor([3, 17, 39])][:, None, None, :]
    q, k = torch.randn(3, 2, 1, 16, generator=g), torch.randn(3, 2, 1, 16, generator=g)
    ref = RoFormerSelfAttention.apply_rotary_position_embeddings(pos, q, k)
    got = FastRoFormerSelfAttention.apply_rotary_position_embeddings(pos, q, k)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # bf16 has no complex type and an odd offset cannot be viewed as pairs: the parent's formula.
    pos16 = _positions(5, 16).to(torch.bfloat16)
    qb = torch.randn(1, 2, 5, 16).to(torch.bfloat16)
    for a, b in zip(FastRoFormerSelfAttention.apply_rotary_position_embeddings(pos16, qb, qb),
                    RoFormerSelfAttention.apply_rotary_position_embeddings(pos16, qb, qb)):
        assert torch.equal(a, b)
    odd, pos = torch.randn(1, 2, 5, 17)[..., 1:], _positions(5, 16)
    for a, b in zip(FastRoFormerSelfAttention.apply_rotary_position_embeddings(pos, odd, odd),
                    RoFormerSelfAttention.apply_rotary_position_embeddings(pos, odd, odd)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def _pair(**overrides):
    torch.manual_seed(0)
    ref = RoFormerModel(RoFormerConfig(**{**CONFIG, **overrides})).eval()
    fast = use_fast_attention(RoFormerModel(RoFormerConfig(**{**CONFIG, **overrides})).eval())
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _count(monkeypatch, owner, name: str) -> list[int]:
    """Count calls of ``owner.name`` (still calling it): proof that a fast path ran."""
    calls, real = [0], getattr(owner, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("rotary_value", [False, True])
def test_fast_model_equals_transformers_model_in_inference(monkeypatch, rotary_value):
    ref, fast = _pair(rotary_value=rotary_value)
    assert all(type(layer.attention.self) is FastRoFormerSelfAttention
               for layer in fast.encoder.layer)
    assert list(fast.state_dict()) == list(ref.state_dict())
    sdpa = _count(monkeypatch, torch.nn.functional, "scaled_dot_product_attention")
    rotated = _count(monkeypatch, attention_module, "_rotate")
    ids = torch.randint(1, 50, (4, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 5:] = mask[3, 2:] = 0  # right padding of unequal lengths
    types = torch.zeros_like(ids)
    types[:, 4:] = 1
    masks = {"padding": mask, "none": None,
             "unilm": unilm_attention_mask(types, mask, torch.float32)}
    with torch.inference_mode():
        for kind, m in masks.items():
            a = ref(ids, attention_mask=m, output_hidden_states=True).hidden_states
            b = fast(ids, attention_mask=m, output_hidden_states=True).hidden_states
            keep = mask.bool() if m is not None else torch.ones_like(mask, dtype=torch.bool)
            for x, y in zip(a, b):  # padded rows attend to nothing real: never read
                torch.testing.assert_close(y[keep], x[keep], rtol=1e-5, atol=1e-5, msg=kind)
    # The fast code ran: one fused attention per layer and pass, 2 or 3 rotations each.
    assert sdpa[0] == 2 * len(masks)
    assert rotated[0] == 2 * len(masks) * (3 if rotary_value else 2)


def test_training_and_attention_weights_take_the_parent_path():
    ref, fast = _pair()
    ref.train(), fast.train()
    ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    a = ref(ids).last_hidden_state
    torch.manual_seed(5)
    b = fast(ids).last_hidden_state
    torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)  # same dropout draws: same results
    a.sum().backward(), b.sum().backward()
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
    ref.eval(), fast.eval()
    with torch.inference_mode():
        out = fast(ids, output_attentions=True)
    assert out.attentions is not None and out.attentions[0].shape == (2, 2, 7, 7)


def test_build_backbone_uses_the_fast_module():
    model = build_backbone("roformer", RoFormerConfig(**CONFIG))
    kinds = {type(m) for m in model.modules() if isinstance(m, RoFormerSelfAttention)}
    assert kinds == {FastRoFormerSelfAttention}


def test_bundled_model_vectors_unchanged():
    from simkit.encoder import Encoder

    enc = Encoder(num_threads=1)
    texts = ["花呗怎么还款", "借呗的额度可以提高吗", "我想取消这笔订单，钱什么时候退回"]
    fast = enc.encode(texts, normalize_embeddings=True)
    for m in enc.model.modules():
        if type(m) is FastRoFormerSelfAttention:
            m.__class__ = RoFormerSelfAttention
    plain = enc.encode(texts, normalize_embeddings=True)
    assert np.abs(fast - plain).max() < 1e-5


def _check_fused(ref, fused, seed: int) -> None:
    """``fused`` (a fuse_qkv copy) matches ``ref`` in inference, reads its snapshot there, and
    trains exactly as ``ref`` does (never reading the snapshot)."""
    ids = torch.randint(1, 50, (3, 8), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[2, 3:] = 0
    with torch.inference_mode():
        a = ref(ids, attention_mask=mask).last_hidden_state
        b = fused(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(b[mask.bool()], a[mask.bool()], rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in fused.encoder.layer[0].attention.self.qkv.parameters())
    # Inference reads the snapshot (wrecking it changes the output); training never does.
    for layer in fused.encoder.layer:
        torch.nn.init.zeros_(layer.attention.self.qkv.weight)
    with torch.inference_mode():
        assert not torch.allclose(fused(ids, attention_mask=mask).last_hidden_state, b)
    ref.train(), fused.train()
    torch.manual_seed(seed)
    a = ref(ids, attention_mask=mask).last_hidden_state
    torch.manual_seed(seed)
    torch.testing.assert_close(fused(ids, attention_mask=mask).last_hidden_state, a)


def test_fused_qkv_equals_three_projections():
    ref, fast = _pair()
    fused = fuse_qkv(copy.deepcopy(fast))
    assert all(layer.attention.self.qkv.out_features == 3 * 32 for layer in fused.encoder.layer)
    _check_fused(ref, fused, seed=4)


def test_int8_encoder_runs_one_fused_projection(tiny_model_dir):
    from simkit.encoder import Encoder

    enc = Encoder(tiny_model_dir, dtype="int8", num_threads=1)
    attention = [m for m in enc.int8_backbone_.modules()
                 if isinstance(m, (FastRoFormerSelfAttention, FusedQKVBertSelfAttention))]
    assert len(attention) == 2
    assert all(type(m.qkv).__module__.startswith("torch.ao.nn.quantized") for m in attention)
    assert not any("qkv" in k for k in enc.model.state_dict())  # the fp32 model is untouched
    assert not any(isinstance(m, FusedQKVBertSelfAttention) for m in enc.model.modules())
    texts = ["花呗怎么还款", "借呗能提前还吗"]
    cos = (Encoder(tiny_model_dir, num_threads=1).encode(texts, normalize_embeddings=True)
           * enc.encode(texts, normalize_embeddings=True)).sum(1)
    assert cos.min() > 0.99


def test_fused_bert_equals_transformers_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64)
    ref = BertModel(cfg, add_pooling_layer=False).eval()
    fused = fuse_qkv(copy.deepcopy(ref))
    kinds = {type(m) for m in fused.modules() if isinstance(m, BertSelfAttention)}
    assert kinds == {FusedQKVBertSelfAttention}
    _check_fused(ref, fused, seed=7)


def test_deprecated_cache_keyword_takes_the_parent_path():
    from transformers.cache_utils import DynamicCache

    cfg = RoFormerConfig(**{**CONFIG, "num_hidden_layers": 1, "is_decoder": True})
    att = use_fast_attention(RoFormerModel(cfg).eval()).encoder.layer[0].attention.self
    cache = DynamicCache(config=cfg)
    with torch.inference_mode():
        att(torch.randn(1, 4, 32), sinusoidal_pos=_positions(4, 16), past_key_values=cache)
    assert cache.get_seq_length() == 4  # the parent stored the keys / values
