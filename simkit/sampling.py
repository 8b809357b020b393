"""How the next token is chosen when generating: the sampling knobs and logits processors.

Used by both decoders in :mod:`simkit.decoding` (the cached one and the reference one), so
they cannot disagree: greedy / top-k / top-p / temperature, the n-gram blocker and the
encoder repetition penalty.

>>> pick_tokens(torch.tensor([[2.0, 1.0, 0.0]]), SamplingConfig(temperature=0), None)
tensor([0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ParameterError
from .tokenization import Tokenizer


@dataclass
class SamplingConfig:
    """How the next token is chosen. ``temperature=0`` (or ``top_k=1``) is greedy;
    ``no_repeat_ngram_size=n`` (> 0) forbids any n-gram twice in one output, as in
    Hugging Face's ``generate`` (small models loop: 还款怎么还款);
    ``encoder_repetition_penalty=p`` (> 1) favours tokens of the source, as Hugging Face's
    processor of that name does, against drift off topic (挂失 -> 开通); on the small default
    model 1.5 and up made outputs repeat source characters without stopping, so it is off
    there. 1.0 = off; < 1 pushes away from the source."""

    top_k: int | None = None
    top_p: float | None = None
    temperature: float = 1.0
    no_repeat_ngram_size: int = 0
    encoder_repetition_penalty: float = 1.0

    def check(self) -> None:
        n = self.no_repeat_ngram_size
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ParameterError("no_repeat_ngram_size", n, "an integer >= 0 (0 = off)")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ParameterError("top_k", self.top_k, "None or an integer >= 1")
        if self.top_p is not None and not 0.0 < float(self.top_p) <= 1.0:
            raise ParameterError("top_p", self.top_p, "None or a number in (0, 1]")
        if not float(self.temperature) >= 0.0:
            raise ParameterError("temperature", self.temperature, "a number >= 0 (0 = greedy)")
        if not float(self.encoder_repetition_penalty) > 0.0:
            raise ParameterError("encoder_repetition_penalty", self.encoder_repetition_penalty,
                                 "a number > 0 (1 = off, > 1 favours the source's tokens)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def pick_tokens(
    logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token per row from logits (rows, V) float32: greedy, or top-k / top-p sampling."""
    if cfg.greedy:
        return logits.argmax(-1)
    logits = logits / float(cfg.temperature)
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already hold top_p of the mass;
        # the first token is always kept.
        drop = (probs.cumsum(-1) - probs) > cfg.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def special_ids(tokenizer: Tokenizer) -> list[int]:
    """Ids of [PAD] [CLS] [SEP] [MASK] [UNK] (those the vocabulary has)."""
    ids = {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
           tokenizer.mask_token_id, tokenizer.unk_token_id}
    return sorted(i for i in ids if i is not None)


def banned_ids(tokenizer: Tokenizer) -> list[int]:
    """Special ids a decoder must never emit: all of :func:`special_ids` but [SEP], which ends
    an output."""
    return [i for i in special_ids(tokenizer) if i != tokenizer.sep_token_id]


def source_token_mask(sources: Sequence[Sequence[int]], vocab_size: int,
                      special: Sequence[int]) -> torch.Tensor:
    """(len(sources), vocab_size) bool: which tokens each source contains, special ones excluded
    (favouring [SEP] would only cut outputs short)."""
    mask = torch.zeros(len(sources), vocab_size, dtype=torch.bool)
    for i, x in enumerate(sources):
        mask[i, list(x)] = True
    mask[:, list(special)] = False
    return mask


def favour_tokens(logits: torch.Tensor, mask: torch.Tensor, penalty: float) -> torch.Tensor:
    """Hugging Face's encoder repetition penalty: where ``mask``, a logit x becomes x * p if
    x > 0 else x / p, i.e. more likely for p > 1 whatever its sign."""
    p = float(penalty)
    boosted = torch.where(logits > 0, logits * p, logits / p)
    return torch.where(mask, boosted, logits)


class NgramBlocker:
    """Tracks the tokens generated per row and masks those that would repeat an n-gram.

    Only the generated part counts: copying n-grams of the source is what a paraphrase does.
    """

    def __init__(self, size: int, rows: int):
        self.size = size
        self.history: list[list[int]] = [[] for _ in range(rows)]
        self.seen: list[dict[tuple, set]] = [{} for _ in range(rows)]

    def apply(self, logits: torch.Tensor, rows: list[int]) -> None:
        """Set -inf (in place) where ``logits[i]`` (of original row ``rows[i]``) would repeat."""
        for i, r in enumerate(rows):
            h = self.history[r]
            if len(h) >= self.size - 1:
                ban = self.seen[r].get(tuple(h[len(h) - self.size + 1 :]))
                if ban:
                    logits[i, list(ban)] = float("-inf")

    def push(self, rows: list[int], tokens: list[int]) -> None:
        for r, t in zip(rows, tokens):
            h = self.history[r]
            h.append(t)
            if len(h) >= self.size:
                self.seen[r].setdefault(tuple(h[len(h) - self.size : -1]), set()).add(t)
