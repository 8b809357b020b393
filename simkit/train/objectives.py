"""Losses: SimBERT (UniLM seq2seq + in-batch contrastive), CoSENT, masked LM, supervised
SimCSE, similarity distillation.

SimBERT: each similar pair (a, b) goes in twice, as ``[CLS] a [SEP] b [SEP]`` and
``[CLS] b [SEP] a [SEP]``, under the UniLM mask. The seq2seq loss is the cross-entropy of the
segment-1 tokens; the contrastive loss treats the L2-normalised pooler vectors of [CLS]
(which sees only segment 0, so it is the vector of the first sentence) as a classifier over
the batch, scale 30, with the row of the same pair in the other order as the positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ..models.simbert import SimBertModel
from ..pooling import pool

CONTRASTIVE_SCALE = 30.0
COSENT_LAMBDA = 20.0
SIMCSE_TEMPERATURE = 0.05  # Gao et al. 2021, supervised SimCSE


def seq2seq_targets(token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions (shifted by one) whose next token is a segment-1 target: real tokens of segment 1."""
    return (token_type_ids[:, 1:] == 1) & attention_mask[:, 1:].bool()


def seq2seq_loss(model: SimBertModel, hidden: torch.Tensor, input_ids: torch.Tensor,
                 token_type_ids: torch.Tensor, attention_mask: torch.Tensor,
                 reduction: Literal["mean", "sum"] = "mean") -> torch.Tensor:
    """Mean (or summed) CE of predicting each segment-1 token (its final [SEP] included)
    from its past.

    Only the positions that predict a target go through the LM head: the vocabulary
    projection is the largest matmul of a small model, and half the positions are segment 0.
    """
    # the positions once, as indices: each boolean index would make the host wait for a GPU
    at = seq2seq_targets(token_type_ids, attention_mask).nonzero(as_tuple=True)
    logits = model.lm_logits(hidden[:, :-1][at])
    targets = input_ids[:, 1:][at]
    return F.cross_entropy(logits.float(), targets, reduction=reduction)


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
    # The pairs left out are -inf, exp() = 0, rather than indexed away: a boolean index makes
    # the host wait for the GPU to learn how many there are.
    diff = diff.masked_fill(~valid, float("-inf")).flatten()
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


def simbert_losses(model: SimBertModel, batch: dict | Sequence[dict]) -> dict[str, torch.Tensor]:
    """Both SimBERT losses from one forward pass under the UniLM mask.

    A list of batches (one batch cut into forward passes of similar-length pairs, each padded
    only to its own longest row) gives the losses of their union: the seq2seq CE averaged
    over all their target tokens, the contrastive softmax over all their rows.
    """
    total, count, pooled = None, None, []
    for b in [batch] if isinstance(batch, dict) else batch:
        out = model(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                    unilm=True, output_hidden_states=False)
        h = out.last_hidden_state
        s2s_ids = b.get("target_ids", b["input_ids"])  # targets stay clean when input is masked
        nll = seq2seq_loss(model, h, s2s_ids, b["token_type_ids"], b["attention_mask"], "sum")
        total = nll if total is None else total + nll
        # as a tensor: an int() here would wait for the device on every pass
        targets = seq2seq_targets(b["token_type_ids"], b["attention_mask"]).sum()
        count = targets if count is None else count + targets
        pooled.append(model.pool_cls(h[:, 0]))
    return {"seq2seq": total / count, "contrastive": contrastive_loss(torch.cat(pooled))}


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, special: torch.Tensor,
                mask_token_id: int, vocab_size: int, prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: ``prob`` of the real, non-special tokens are chosen (at least one per
    batch); of those 80 % become [MASK], 10 % a random token, 10 % stay. Returns the corrupted
    ids and the chosen positions (the targets)."""
    candidates = attention_mask.bool() & ~torch.isin(input_ids, special)
    chosen = candidates & (torch.rand(input_ids.shape, device=input_ids.device) < prob)
    # A batch of very short sentences still gets one target: the first candidate, set on the
    # device (an `if chosen.any()` here would make the host wait for the GPU on every batch).
    flat = chosen.view(-1)
    first = candidates.view(-1).to(torch.uint8).argmax().view(1)  # 1-d: a 0-d index is read on the host
    flat[first] = flat[first] | (candidates.any() & ~chosen.any())
    roll = torch.rand(input_ids.shape, device=input_ids.device)
    ids = input_ids.masked_fill(chosen & (roll < 0.8), mask_token_id)
    random_ids = torch.randint(vocab_size, input_ids.shape, device=input_ids.device)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    ids = torch.where(swap, random_ids, ids)
    return ids, chosen


def mlm_loss(model: SimBertModel, input_ids: torch.Tensor, corrupted: torch.Tensor,
             attention_mask: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the original tokens at the chosen positions (bidirectional attention)."""
    hidden = model(corrupted, attention_mask, output_hidden_states=False).last_hidden_state
    at = chosen.nonzero(as_tuple=True)  # once, as indices: a boolean index waits for the GPU each time
    return F.cross_entropy(model.lm_logits(hidden[at]).float(), input_ids[at])


def simcse_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                temperature: float = SIMCSE_TEMPERATURE) -> torch.Tensor:
    """Supervised SimCSE: each anchor (an NLI premise) against every positive (entailed
    hypothesis) and every hard negative (contradiction) of the batch; its own positive wins."""
    a = F.normalize(anchor.float(), dim=-1)
    c = F.normalize(torch.cat([positive, negative]).float(), dim=-1)
    logits = a @ c.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))
