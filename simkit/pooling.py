"""Pooling of token vectors into one sentence vector.

All averages honour the attention mask, so padding never leaks into a vector; they are
computed in float32 whatever the model's dtype. ``first-last-avg`` averages the output of
the *first transformer layer* (``hidden_states[1]``, not the embeddings) and of the last one,
as BERT-whitening does. ``mean`` is the sentence-transformers name of ``last-avg``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from .errors import check_choice

if TYPE_CHECKING:  # torch is imported lazily so that the CLI's --help stays fast
    import torch

Pooling = Literal["cls", "pooler", "last-avg", "first-last-avg", "mean"]
POOLINGS: tuple[str, ...] = ("cls", "pooler", "last-avg", "first-last-avg", "mean")


def check_pooling(pooling: str | Sequence[str]) -> None:
    for p in [pooling] if isinstance(pooling, str) else pooling:
        check_choice("pooling", p, POOLINGS)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where ``attention_mask`` is 1: (B, L, H), (B, L) -> (B, H)."""
    import torch

    m = attention_mask.to(torch.float32).unsqueeze(-1)
    return (hidden.to(torch.float32) * m).sum(1) / m.sum(1).clamp_min(1.0)


def pool(
    pooling: str,
    hidden_states: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    pooler=None,
) -> torch.Tensor:
    """Sentence vectors (B, H) float32 from a backbone's ``hidden_states`` (embeddings first).

    ``pooler`` is a callable on the [CLS] vector, required for ``pooling='pooler'``.
    """
    import torch

    check_pooling(pooling)
    last = hidden_states[-1]
    if pooling == "cls":
        return last[:, 0].to(torch.float32)
    if pooling == "pooler":
        if pooler is None:
            raise ValueError("pooling 'pooler' needs a model with a pooler; this one has none")
        return pooler(last[:, 0]).to(torch.float32)
    if pooling in ("last-avg", "mean"):
        return masked_mean(last, attention_mask)
    # first-last-avg: mean over tokens is linear, so averaging the two layers first is exact.
    if len(hidden_states) < 2:
        raise ValueError("first-last-avg needs the hidden states of every layer")
    first = hidden_states[1]
    return (masked_mean(first, attention_mask) + masked_mean(last, attention_mask)) / 2
