"""The model a training run starts from: a new one, or an ``init`` model grown as asked.

>>> model, tok, info = build_model(texts, init="runs/stage7/model", stack_layers=8)  # doctest: +SKIP
>>> model, tok, info = build_model(texts, backbone="roformer", hidden_size=256)        # from scratch
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from ..errors import InputError
from ..models.checkpoint import ModelInfo, load_model
from ..models.factory import build_vocab, extend_vocab, new_model
from ..models.factory import stack_layers as _stack

log = logging.getLogger(__name__)


def build_model(texts: Sequence[str], *, init: str | None = None,
                backbone: Literal["bert", "roformer"] = "roformer", hidden_size: int = 256,
                num_layers: int = 4, num_heads: int | None = None, max_seq_length: int = 64,
                vocab_min_freq: int = 1, extend_vocab_: bool = False, stack_layers: int | None = None,
                seed: int = 0, source: str = "simkit train (from scratch)"):
    """``(model, tokenizer, info)`` to train on ``texts`` (the training sentences).

    From scratch, the vocabulary is the characters of ``texts`` seen ``vocab_min_freq``
    times. With ``init``: ``extend_vocab_`` adds the characters the model maps to [UNK]
    (each starts as [UNK]'s embedding), ``stack_layers`` deepens it by progressive stacking.
    """
    if extend_vocab_ and not init:
        raise InputError("--extend-vocab grows the vocabulary of an --init model; from scratch the "
                         "vocabulary is built from the training text anyway")
    if stack_layers is not None and not init:
        raise InputError("--stack-layers deepens an --init model; from scratch use --num-layers")
    if not init:
        model, tok = new_model(backbone, build_vocab(texts, min_freq=vocab_min_freq), seed=seed,
                               hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                               max_position=max(512, max_seq_length))
        return model, tok, ModelInfo(backbone, pooling="pooler", max_seq_length=max_seq_length, source=source)
    model, tok, info = load_model(init)
    info.max_seq_length = max_seq_length
    if extend_vocab_:
        model, tok, added = extend_vocab(model, tok, texts, min_freq=vocab_min_freq)
        log.info("--extend-vocab: added %d tokens that %s maps to [UNK]: %s", len(added), init,
                 " ".join(added[:30]) + (" …" if len(added) > 30 else ""))
    if stack_layers is not None:
        n_old = model.config.num_hidden_layers
        model = _stack(model, stack_layers)
        log.info("--stack-layers: %d layers from %s's %d (layer i starts as layer i %% %d)",
                 stack_layers, init, n_old, n_old)
    return model, tok, info
