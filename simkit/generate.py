"""The paraphrase API of SimBERT / RoFormer-Sim: sample, deduplicate, rerank, keep the best.

Decoding itself (the batched, KV-cached UniLM sampler and the reference decoder) lives in
:mod:`simkit.decoding`; this module checks inputs, turns texts into ids and back, and ranks
candidates by cosine or by seq2seq likelihood (SimBERT's ``gen_synonyms``).

>>> p = Paraphraser("path/to/simbert")                         # doctest: +SKIP
>>> p.generate(["今天天气不错"], n=4, top_p=0.95, seed=0)       # [[4 strings]]
>>> p.similar("今天天气不错", n=100, top_k=20)                 # [{"text", "score", ...} x <= 20]
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from .decoding import decode
from .encoder import Encoder
from .errors import InputError, ParameterError
from .likelihood import log_likelihood
from .models.checkpoint import ModelInfo
from .models.simbert import SimBertModel
from .sampling import (
    SamplingConfig,
)
from .tokenization import Tokenizer

logger = logging.getLogger(__name__)

Rerank = Literal["cosine", "likelihood"]

# Samples per text decoded at once: each holds a key/value cache; 100,000 exhausted 24 GB.
MAX_SAMPLES = 1024


class Paraphraser:
    """Generate similar sentences with a SimBERT-style model (pooler + LM head).

    ``model`` is a model path / hub id (default: ``$SIMKIT_MODEL``) or an :class:`Encoder`.
    ``pooling`` is the sentence vector used to rerank candidates in :meth:`similar`
    ('pooler' by default, SimBERT's own sentence vector).
    """

    def __init__(
        self,
        model: str | os.PathLike | Encoder | None = None,
        *,
        pooling: str | None = None,
        max_seq_length: int | None = None,
        device: str | None = None,
        num_threads: int | None = None,
    ):
        if isinstance(model, Encoder):
            encoder = model
        else:
            encoder = Encoder(model, max_seq_length=max_seq_length, device=device,
                              num_threads=num_threads, pooling=pooling or "pooler")
        self._init(encoder)

    @classmethod
    def from_model(cls, model: SimBertModel, tokenizer: Tokenizer, info: ModelInfo,
                   *, pooling: str | None = None, max_seq_length: int | None = None,
                   device: str | None = None) -> Paraphraser:
        enc = Encoder.from_model(model, tokenizer, info, pooling=pooling or "pooler",
                                 max_seq_length=max_seq_length, device=device)
        self = cls.__new__(cls)
        self._init(enc)
        return self

    def _init(self, encoder: Encoder) -> None:
        if encoder.model.lm_head is None:
            raise InputError(
                f"model {encoder.model_path!r} has no LM head (MLM weights), so it cannot generate; "
                "use a SimBERT / RoFormer-Sim model or a BERT checkpoint with its MLM head"
            )
        self.encoder = encoder
        self.model = encoder.model
        self.tokenizer = encoder.tokenizer
        self.max_seq_length = encoder.max_seq_length
        self.last_generate_info_: dict = {}

    # -- inputs -------------------------------------------------------------------------
    def _source_ids(self, texts: Sequence[str], mask_idxs: Sequence[int] | None) -> list[list[int]]:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InputError("texts must be a list of str (use [text] for one text)")
        if not texts:
            raise InputError("texts is empty; expected at least one text")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise InputError(f"text {i} is {t!r}; expected a non-empty string")
        ids, n_trunc = self.tokenizer.encode_batch(texts, self.max_seq_length)
        self.last_generate_info_ = {"n_texts": len(texts), "truncated": n_trunc,
                                    "max_seq_length": self.max_seq_length}
        if n_trunc:
            warnings.warn(
                f"{n_trunc} of {len(texts)} texts were longer than max_seq_length="
                f"{self.max_seq_length} tokens and were truncated before generating",
                stacklevel=3,
            )
        if mask_idxs and self.tokenizer.mask_token_id is None:
            raise InputError("mask_idxs needs a [MASK] token, and this model's vocabulary has none")
        for i, x in enumerate(ids):
            if len(x) == 2:
                raise InputError(f"text {i} ({texts[i]!r}) has no token the vocabulary knows")
            for j in mask_idxs or ():
                if not 0 <= j < len(x) - 2:
                    raise InputError(
                        f"mask_idxs has {j}, but text {i} has {len(x) - 2} tokens "
                        f"(valid indices 0..{len(x) - 3})"
                    )
                x[j + 1] = self.tokenizer.mask_token_id  # +1: skip [CLS]
        return ids

    def _limits(self, ids: list[list[int]], max_new_tokens: int | None, n: int) -> int:
        if not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_SAMPLES:
            raise ParameterError("n", n, f"an integer in 1..{MAX_SAMPLES} (samples per text, "
                             "decoded together: their caches share memory)")
        max_new_tokens = self.max_seq_length if max_new_tokens is None else max_new_tokens
        if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
            raise ParameterError("max_new_tokens", max_new_tokens, "an integer >= 1")
        max_pos = self.model.config.max_position_embeddings
        longest = max(len(x) for x in ids)
        if longest + max_new_tokens > max_pos:
            raise InputError(
                f"source ({longest} tokens) + max_new_tokens={max_new_tokens} exceeds the model's "
                f"{max_pos} positions; lower max_new_tokens or max_seq_length"
            )
        return int(max_new_tokens)

    # -- generation ----------------------------------------------------------------------
    def generate_ids(
        self,
        texts: Sequence[str],
        n: int = 1,
        sample_top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        mask_idxs: Sequence[int] | None = None,
        no_repeat_ngram_size: int = 0,
        encoder_repetition_penalty: float = 1.0,
    ) -> list[list[list[int]]]:
        """Token ids (no [SEP]) of n samples per text: ``out[i][s]``. See :meth:`generate`."""
        cfg = SamplingConfig(sample_top_k, top_p, temperature, no_repeat_ngram_size,
                             encoder_repetition_penalty)
        cfg.check()
        src = self._source_ids(texts, mask_idxs)
        max_new = self._limits(src, max_new_tokens, n)
        return decode(self.model, self.tokenizer, src, n, max_new, cfg, seed, self.encoder.device)

    def generate(
        self,
        texts: str | Sequence[str],
        n: int = 1,
        sample_top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        mask_idxs: Sequence[int] | None = None,
        no_repeat_ngram_size: int = 0,
        encoder_repetition_penalty: float = 1.0,
    ) -> list[list[str]]:
        """n sampled paraphrases per text: a list (one per text) of n strings.

        ``sample_top_k`` / ``top_p`` / ``temperature`` shape the sampling (``temperature=0`` is
        greedy); ``max_new_tokens`` caps the generated tokens (default: the model's
        max_seq_length); ``mask_idxs`` replaces those token positions of every source
        (0 = first token after [CLS]) by [MASK] first, as RoFormer-Sim allows;
        ``no_repeat_ngram_size`` forbids repeated n-grams in an output;
        ``encoder_repetition_penalty`` > 1 favours the source's tokens (see
        :class:`SamplingConfig`). The same inputs and ``seed`` give the same outputs.
        """
        texts = [texts] if isinstance(texts, str) else texts
        ids = self.generate_ids(texts, n, sample_top_k, top_p, temperature, max_new_tokens, seed, mask_idxs,
                                no_repeat_ngram_size, encoder_repetition_penalty)
        return [[self.tokenizer.decode(x) for x in samples] for samples in ids]

    def log_likelihood(self, sources: Sequence[str], targets: Sequence[str],
                       batch_size: int = 32) -> np.ndarray:
        """Mean log P(target | source) per token under the seq2seq head: (n_pairs,) float32.
        See :func:`simkit.likelihood.log_likelihood`."""
        return log_likelihood(self.model, self.tokenizer, sources, targets, self.max_seq_length,
                              batch_size)

    def similar(
        self,
        text: str,
        n: int = 100,
        top_k: int = 20,
        sample_top_k: int | None = None,
        top_p: float | None = 0.95,
        temperature: float = 1.0,
        max_new_tokens: int | None = None,
        seed: int | None = None,
        mask_idxs: Sequence[int] | None = None,
        batch_size: int = 64,
        no_repeat_ngram_size: int = 0,
        encoder_repetition_penalty: float = 1.0,
        rerank: Rerank = "cosine",
        min_score: float | None = None,
    ) -> list[dict]:
        """SimBERT's ``gen_synonyms``: sample n, drop duplicates and the source, keep the
        ``top_k`` best (at most; those with ``score >= min_score`` if given).

        ``rerank='cosine'`` (SimBERT's) ranks by the cosine of the model's own sentence
        vectors to the source; ``'likelihood'`` by ``loglik``, the mean of the seq2seq
        log-likelihoods P(candidate | source) and P(source | candidate) (nats per token, see
        :mod:`simkit.likelihood`): fluent candidates that keep the source recoverable.
        Returns ``[{"text", "score", "cosine", "loglik"}, ...]`` best first.
        """
        if not isinstance(text, str):
            raise InputError(f"similar() takes one text (str); got {type(text).__name__}")
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ParameterError("n", n, "an integer >= 1 (candidates to sample)")
        if not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ParameterError("top_k", top_k, "an integer >= 1 (candidates to keep)")
        if sample_top_k is not None and (not isinstance(sample_top_k, (int, np.integer)) or sample_top_k < 1):
            # checked here, not by the sampler, whose own name for it is top_k: the other parameter
            raise ParameterError("sample_top_k", sample_top_k, "None or an integer >= 1 (tokens to sample among)")
        if rerank not in get_args(Rerank):
            raise ParameterError("rerank", rerank, f"one of {', '.join(get_args(Rerank))}")
        if min_score is not None and not (isinstance(min_score, (int, float, np.floating))
                                          and np.isfinite(min_score)):
            raise ParameterError("min_score", min_score, "a finite number (a NaN keeps nothing)")
        cands = self.generate([text], n, sample_top_k, top_p, temperature, max_new_tokens, seed, mask_idxs,
                              no_repeat_ngram_size, encoder_repetition_penalty)[0]
        src_ids, _ = self.tokenizer.encode_batch([text], self.max_seq_length)
        drop = {text, self.tokenizer.decode(src_ids[0]), ""}
        unique = [c for c in dict.fromkeys(cands) if c not in drop]
        if not unique:
            return []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation of the source was already reported
            vecs = self.encoder.encode([text, *unique], batch_size=batch_size,
                                       show_progress_bar=False, normalize_embeddings=True)
        cosine = vecs[1:] @ vecs[0]
        fwd = self.log_likelihood([text] * len(unique), unique, batch_size)
        bwd = self.log_likelihood(unique, [text] * len(unique), batch_size)
        loglik = (fwd + bwd) / 2
        score = cosine if rerank == "cosine" else loglik
        order = [i for i in np.argsort(-score, kind="stable")
                 if min_score is None or score[i] >= min_score][:top_k]
        return [{"text": unique[i], "score": float(score[i]), "cosine": float(cosine[i]),
                 "loglik": float(loglik[i])} for i in order]
