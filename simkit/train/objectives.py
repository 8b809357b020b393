"""Losses: SimBERT (UniLM seq2seq + in-batch contrastive), CoSENT, similarity distillation.

SimBERT: each similar pair (a, b) goes in twice, as ``[CLS] a [SEP] b [SEP]`` and
``[CLS] b [SEP] a [SEP]``, under the UniLM mask. The seq2seq loss is the cross-entropy of the
segment-1 tokens; the contrastive loss treats the L2-normalised pooler vectors of [CLS]
(which sees only segment 0, so it is the vector of the first sentence) as a classifier over
the batch, scale 30, with the row of the same pair in the other order as the positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.simbert import SimBertModel
from ..pooling import pool

CONTRASTIVE_SCALE = 30.0
COSENT_LAMBDA = 20.0


def seq2seq_loss(model: SimBertModel, hidden: torch.Tensor, input_ids: torch.Tensor,
                 token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean CE of predicting each segment-1 token (its final [SEP] included) from its past.

    Only the positions that predict a target go through the LM head: the vocabulary
    projection is the largest matmul of a small model, and half the positions are segment 0.
    """
    target_mask = (token_type_ids[:, 1:] == 1) & attention_mask[:, 1:].bool()
    logits = model.lm_logits(hidden[:, :-1][target_mask])
    targets = input_ids[:, 1:][target_mask]
    return F.cross_entropy(logits.float(), targets)


def contrastive_loss(vectors: torch.Tensor, scale: float = CONTRASTIVE_SCALE) -> torch.Tensor:
    """In-batch softmax over cosine similarities; rows 2i and 2i+1 are each other's positive."""
    v = F.normalize(vectors.float(), dim=-1)
    sim = v @ v.T * scale
    sim = sim - torch.eye(len(v), device=v.device) * 1e12  # a row is not its own candidate
    labels = torch.arange(len(v), device=v.device) ^ 1
    return F.cross_entropy(sim, labels)


def cosent_loss(cos: torch.Tensor, labels: torch.Tensor, lam: float = COSENT_LAMBDA,
                groups: torch.Tensor | None = None) -> torch.Tensor:
    """CoSENT: ``log(1 + sum_{label_i > label_j} exp(lam * (cos_j - cos_i)))``.

    With ``groups``, only pairs of the same group are ranked against each other: labels of
    different files need not share a scale (STS-B's 0-5 against ATEC's 0/1).
    """
    diff = (cos[None, :] - cos[:, None]) * lam  # [i, j] = lam * (cos_j - cos_i)
    valid = labels[:, None] > labels[None, :]
    if groups is not None:
        valid &= groups[:, None] == groups[None, :]
    diff = diff[valid]
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff]), dim=0)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between the student's and the teacher's cosine-similarity matrices (RoFormer-Sim)."""
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    return F.mse_loss(s @ s.T, t @ t.T)


def sentence_vectors(model: SimBertModel, input_ids, attention_mask, pooling: str = "pooler") -> torch.Tensor:
    """Vectors of single sentences ``[CLS] s [SEP]``, pooled by :func:`simkit.pooling.pool`
    exactly as :class:`~simkit.encoder.Encoder` pools them (the retrieval path)."""
    out = model(input_ids, attention_mask, output_hidden_states=pooling == "first-last-avg")
    hidden = out.hidden_states if pooling == "first-last-avg" else (out.last_hidden_state,)
    return pool(pooling, hidden, attention_mask, model.pool_cls if pooling == "pooler" else None)


def simbert_losses(model: SimBertModel, batch: dict) -> dict[str, torch.Tensor]:
    """Both SimBERT losses from one forward pass under the UniLM mask."""
    out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                unilm=True, output_hidden_states=False)
    h = out.last_hidden_state
    s2s_ids = batch.get("target_ids", batch["input_ids"])  # targets stay clean when input is masked
    return {
        "seq2seq": seq2seq_loss(model, h, s2s_ids, batch["token_type_ids"], batch["attention_mask"]),
        "contrastive": contrastive_loss(model.pool_cls(h[:, 0])),
    }
