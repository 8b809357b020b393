"""How likely a SimBERT-style model finds one sentence as a paraphrase of another.

``log_likelihood(model, tokenizer, sources, targets)`` scores each target under the UniLM
seq2seq head, teacher-forced: ``[CLS] source [SEP] target [SEP]`` in one forward pass, and
the mean log-probability (nats per token, the final [SEP] included) of the target's tokens.
Read in both directions it reranks generated paraphrases (a noisy-channel score): the
forward direction P(candidate | source) rewards fluent candidates, the backward direction
P(source | candidate) rewards candidates the source can be recovered from, i.e. ones that
kept its meaning.

>>> log_likelihood(model, tok, ["花呗怎么还款"], ["花呗如何还款"], max_seq_length=64)  # doctest: +SKIP
array([-0.9], dtype=float32)                                      # shape (n_pairs,)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .collate import pad_batch
from .errors import InputError, ParameterError
from .models.simbert import SimBertModel
from .tokenization import Tokenizer


def log_likelihood(
    model: SimBertModel,
    tokenizer: Tokenizer,
    sources: Sequence[str],
    targets: Sequence[str],
    max_seq_length: int,
    batch_size: int = 32,
) -> np.ndarray:
    """Mean log P(target token | source, earlier target tokens) per pair: float32 (n_pairs,).

    Each side is truncated to ``max_seq_length - 2`` tokens, as generation truncates its
    source. Values are <= 0; higher is likelier.
    """
    for name, texts in (("sources", sources), ("targets", targets)):
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InputError(f"{name} must be a list of str (use [text] for one text); got {texts!r}")
    if len(sources) != len(targets):
        raise InputError(f"{len(sources)} sources but {len(targets)} targets; expected as many of each")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError("batch_size", batch_size, "an integer >= 1")
    if model.lm_head is None:
        raise InputError("this model has no LM head, so it cannot score paraphrases")
    keep = max_seq_length - 2
    src_ids = tokenizer.tokenize_ids(list(sources))
    tgt_ids = tokenizer.tokenize_ids(list(targets))
    for name, texts, ids in (("source", sources, src_ids), ("target", targets, tgt_ids)):
        for i, x in enumerate(ids):
            if not x:
                raise InputError(f"{name} {i} ({texts[i]!r}) has no token the vocabulary knows")
    dev = next(model.parameters()).device
    out = np.empty(len(sources), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(sources), batch_size):
            pairs = [tokenizer.encode_pair(a[:keep], b[:keep])
                     for a, b in zip(src_ids[start:start + batch_size], tgt_ids[start:start + batch_size])]
            b = pad_batch([x for x, _ in pairs], tokenizer.pad_token_id, [t for _, t in pairs], dev)
            ids, types, mask = b["input_ids"], b["token_type_ids"], b["attention_mask"]
            hidden = model(ids, mask, types, unilm=True, output_hidden_states=False).last_hidden_state
            # Position p predicts token p + 1; only segment-1 tokens (target and its [SEP]) count.
            target = (types[:, 1:] == 1) & mask[:, 1:].bool()
            logp = model.lm_logits(hidden[:, :-1]).float().log_softmax(-1)
            logp = logp.gather(-1, ids[:, 1:, None])[..., 0] * target
            out[start:start + len(pairs)] = (logp.sum(1) / target.sum(1)).cpu().numpy()
    return out
