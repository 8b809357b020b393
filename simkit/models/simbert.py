"""The SimBERT / RoFormer-Sim model: one network that retrieves and generates.

A BERT or RoFormer backbone (Hugging Face ``transformers``) with two heads:

* a pooler on the [CLS] vector with **linear** activation (SimBERT's choice: the sentence
  vector is ``W h_cls + b``, no tanh, so cosine similarity is not squashed), and
* an LM head tied to the word embeddings, used for UniLM seq2seq generation.

Under the UniLM mask a sequence ``[CLS] a [SEP] b [SEP]`` with token types 0…0 1…1 lets
segment 0 attend bidirectionally within itself and segment 1 attend to all of segment 0
and causally to its own past, so one forward pass yields both the sentence vector of ``a``
and the next-token distributions of ``b``.

>>> model = SimBertModel("bert", BertConfig(vocab_size=100, hidden_size=32,    # doctest: +SKIP
...                      num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
>>> out = model(input_ids, attention_mask, token_type_ids, unilm=True)          # doctest: +SKIP
>>> model.lm_logits(out.hidden_states[-1]).shape                                # (B, L, 100)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from transformers.activations import ACT2FN

from ..errors import check_choice

Backbone = Literal["bert", "roformer"]
BACKBONES = ("bert", "roformer")
PoolerActivation = Literal["linear", "tanh"]


def unilm_attention_mask(
    token_type_ids: torch.Tensor, attention_mask: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Additive UniLM mask (B, 1, L, L): 0 where attention is allowed, ``finfo.min`` elsewhere.

    Position i may see position j iff ``cumsum(types)[j] <= cumsum(types)[i]`` (bert4keras'
    construction) and j is not padding. Additive float is the one form that both BertModel
    (sdpa) and RoFormerModel (eager) read correctly in transformers 5.x: bool and 0/1 float
    masks are silently misread by one or the other.
    """
    idx = torch.cumsum(token_type_ids, dim=1)
    allowed = idx[:, None, :] <= idx[:, :, None]
    allowed = allowed & attention_mask[:, None, :].bool()
    mask = torch.zeros(allowed.shape, dtype=dtype, device=token_type_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def build_backbone(backbone: Backbone, config) -> nn.Module:
    check_choice("backbone", backbone, BACKBONES)
    if backbone == "bert":
        from transformers import BertModel

        return BertModel(config, add_pooling_layer=False)
    from transformers import RoFormerModel

    from .attention import use_fast_attention

    return use_fast_attention(RoFormerModel(config))


class Pooler(nn.Module):
    """Dense layer on the [CLS] vector; activation ``linear`` (SimBERT) or ``tanh`` (BERT)."""

    def __init__(self, hidden_size: int, activation: PoolerActivation = "linear"):
        super().__init__()
        check_choice("pooler_activation", activation, ("linear", "tanh"))
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = activation

    def forward(self, cls_vector: torch.Tensor) -> torch.Tensor:
        y = self.dense(cls_vector)
        return torch.tanh(y) if self.activation == "tanh" else y


class LMHead(nn.Module):
    """BERT's MLM head: dense + act + LayerNorm, then the (tied) word-embedding matrix + bias."""

    def __init__(self, config):
        super().__init__()
        emb = getattr(config, "embedding_size", None) or config.hidden_size
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(config.hidden_size, emb)
        self.transform.LayerNorm = nn.LayerNorm(emb, eps=config.layer_norm_eps)
        self.act = ACT2FN[config.hidden_act]
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.transform.LayerNorm(self.act(self.transform.dense(hidden)))
        return nn.functional.linear(h, word_embeddings, self.bias)


class SimBertModel(nn.Module):
    """Backbone + optional linear pooler + optional tied LM head (see module docstring)."""

    def __init__(
        self,
        backbone: Backbone,
        config,
        with_pooler: bool = True,
        with_lm_head: bool = True,
        pooler_activation: PoolerActivation = "linear",
    ):
        super().__init__()
        self.backbone_type = backbone
        self.config = config
        self.backbone = build_backbone(backbone, config)
        self.pooler = Pooler(config.hidden_size, pooler_activation) if with_pooler else None
        self.lm_head = LMHead(config) if with_lm_head else None

    @property
    def word_embeddings(self) -> torch.Tensor:
        return self.backbone.embeddings.word_embeddings.weight

    @property
    def dtype(self) -> torch.dtype:
        return self.word_embeddings.dtype

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        unilm: bool = False,
        output_hidden_states: bool = True,
    ):
        """Backbone outputs; ``unilm=True`` applies the UniLM mask built from token types."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        # Plain padding masks go in as 2-D so transformers builds them its own (tested) way.
        mask = (
            unilm_attention_mask(token_type_ids, attention_mask, self.dtype)
            if unilm
            else attention_mask
        )
        return self.backbone(
            input_ids=input_ids,
            attention_mask=mask,
            token_type_ids=token_type_ids,
            output_hidden_states=output_hidden_states,
        )

    def pool_cls(self, cls_vector: torch.Tensor) -> torch.Tensor:
        if self.pooler is None:
            raise ValueError("this model has no pooler; use pooling 'cls', 'last-avg' or 'first-last-avg'")
        return self.pooler(cls_vector)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits (…, vocab) from hidden states (…, H)."""
        if self.lm_head is None:
            raise ValueError("this model has no LM head, so it cannot generate or train seq2seq")
        return self.lm_head(hidden, self.word_embeddings)
