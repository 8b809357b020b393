"""Paraphrase generation with SimBERT / RoFormer-Sim: UniLM seq2seq, batched, with a KV cache.

The source goes in as segment 0 (``[CLS] text [SEP]``); the output is sampled as segment 1
under the UniLM mask until ``[SEP]``. Segment 0 never sees segment 1, so its keys / values
are computed once per source and cached; every later step runs one token per sequence
through the backbone's own modules (embeddings, q/k/v, output, FFN) with its own absolute
position: ``len(source_i) + t``. Hugging Face's cache path is not used because RoFormerModel
forces ``use_cache=False`` outside decoder mode and derives RoPE positions from one scalar
past length for the whole batch, which is wrong for right-padded sources of unequal length.

>>> p = Paraphraser("path/to/simbert")                         # doctest: +SKIP
>>> p.generate(["今天天气不错"], n=4, top_p=0.95, seed=0)       # [[4 strings]]
>>> p.similar("今天天气不错", n=100, k=20)                     # [{"text", "score", ...} x <= 20]
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from .collate import pad_batch
from .encoder import Encoder
from .errors import InputError
from .likelihood import log_likelihood
from .models.checkpoint import ModelInfo
from .models.simbert import SimBertModel
from .sampling import (
    NgramBlocker,
    SamplingConfig,
    banned_ids,
    favour_tokens,
    pick_tokens,
    source_token_mask,
    special_ids,
)
from .tokenization import Tokenizer

logger = logging.getLogger(__name__)

Rerank = Literal["cosine", "likelihood"]


class CachedUniLM:
    """UniLM decoding over a SimBertModel's backbone modules with a preallocated KV cache.

    ``prefill`` encodes right-padded sources (segment 0, bidirectional within the source)
    and fills cache slots ``0..Lmax-1``; ``step`` appends one segment-1 token per row at
    slot ``Lmax + t`` with position ``len_i + t`` and returns its last hidden state.
    """

    def __init__(self, model: SimBertModel):
        self.model = model
        self.bb = model.backbone
        self.rope = model.backbone_type == "roformer"
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        self.layers = list(self.bb.encoder.layer)

    def _embed(self, ids, types, positions):
        if self.rope:
            h = self.bb.embeddings(input_ids=ids, token_type_ids=types)
            if hasattr(self.bb, "embeddings_project"):
                h = self.bb.embeddings_project(h)
            return h
        return self.bb.embeddings(input_ids=ids, token_type_ids=types, position_ids=positions)

    def _layers(self, h, positions, mask, slot: int):
        """Run every layer on h (rows, q, H); write K/V at cache slots [slot, slot+q)."""
        rows, q, _ = h.shape
        kv_end = slot + q
        sin_pos = None
        if self.rope:
            sin_pos = self.bb.encoder.embed_positions.weight[positions][:, None].to(h.dtype)
        for i, layer in enumerate(self.layers):
            att = layer.attention.self
            shape = (rows, q, self.heads, self.head_dim)
            qh = att.query(h).view(shape).transpose(1, 2)
            kh = att.key(h).view(shape).transpose(1, 2)
            vh = att.value(h).view(shape).transpose(1, 2)
            if self.rope:
                if att.rotary_value:
                    qh, kh, vh = att.apply_rotary_position_embeddings(sin_pos, qh, kh, vh)
                else:
                    qh, kh = att.apply_rotary_position_embeddings(sin_pos, qh, kh)
            self.k[i][:, :, slot:kv_end] = kh
            self.v[i][:, :, slot:kv_end] = vh
            ctx = F.scaled_dot_product_attention(
                qh, self.k[i][:, :, :kv_end], self.v[i][:, :, :kv_end], attn_mask=mask
            )
            ctx = ctx.transpose(1, 2).reshape(rows, q, self.heads * self.head_dim)
            a = layer.attention.output(ctx, h)
            h = layer.output(layer.intermediate(a), a)
        return h

    def prefill(self, ids: torch.Tensor, lengths: torch.Tensor, max_new: int) -> torch.Tensor:
        """Encode sources (B, Lmax) right-padded; return the hidden state of each last token."""
        B, L = ids.shape
        dtype = self.model.dtype
        dev = ids.device
        self.src_len = L
        total = L + max_new
        self.k = [torch.zeros(B, self.heads, total, self.head_dim, dtype=dtype, device=dev)
                  for _ in self.layers]
        self.v = [torch.zeros_like(k) for k in self.k]
        valid = torch.arange(total, device=dev)[None, :] < lengths[:, None]
        valid[:, L:] = True  # generated slots are always visible to later steps
        self.key_mask = torch.zeros(B, 1, 1, total, dtype=dtype, device=dev)
        self.key_mask.masked_fill_(~valid[:, None, None, :], torch.finfo(dtype).min)
        self.lengths = lengths
        positions = torch.arange(L, device=dev).expand(B, L)
        h = self._embed(ids, torch.zeros_like(ids), positions)
        h = self._layers(h, positions, self.key_mask[..., :L], slot=0)
        return h[torch.arange(B, device=dev), lengths - 1]

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder / repeat) cache rows: expanding sources to samples, dropping done ones."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        self.key_mask = self.key_mask.index_select(0, rows)
        self.lengths = self.lengths.index_select(0, rows)

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        """Feed generated token t (rows,) as segment 1; return its last hidden state (rows, H)."""
        ids = tokens[:, None]
        positions = (self.lengths + t)[:, None]
        slot = self.src_len + t
        h = self._embed(ids, torch.ones_like(ids), positions)
        h = self._layers(h, positions, self.key_mask[..., : slot + 1], slot=slot)
        return h[:, 0]


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

    def _limits(self, ids: list[list[int]], max_length: int | None, n: int) -> int:
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"n={n!r}; expected an integer >= 1 (samples per text)")
        max_length = self.max_seq_length if max_length is None else max_length
        if not isinstance(max_length, (int, np.integer)) or max_length < 1:
            raise InputError(f"max_length={max_length!r}; expected an integer >= 1")
        max_pos = self.model.config.max_position_embeddings
        longest = max(len(x) for x in ids)
        if longest + max_length > max_pos:
            raise InputError(
                f"source ({longest} tokens) + max_length={max_length} exceeds the model's "
                f"{max_pos} positions; lower max_length or max_seq_length"
            )
        return int(max_length)

    # -- generation ----------------------------------------------------------------------
    def generate_ids(
        self,
        texts: Sequence[str],
        n: int = 1,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        max_length: int | None = None,
        seed: int | None = None,
        mask_idxs: Sequence[int] | None = None,
        no_repeat_ngram_size: int = 0,
        encoder_repetition_penalty: float = 1.0,
    ) -> list[list[list[int]]]:
        """Token ids (no [SEP]) of n samples per text: ``out[i][s]``. See :meth:`generate`."""
        cfg = SamplingConfig(top_k, top_p, temperature, no_repeat_ngram_size,
                             encoder_repetition_penalty)
        cfg.check()
        src = self._source_ids(texts, mask_idxs)
        max_new = self._limits(src, max_length, n)
        dev = self.encoder.device
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(seed) if seed is not None else int(torch.seed()))
        B = len(src)
        ids = pad_batch(src, self.tokenizer.pad_token_id)["input_ids"]
        lengths = torch.tensor([len(x) for x in src], dtype=torch.long, device=dev)
        sep = self.tokenizer.sep_token_id
        banned = torch.tensor(banned_ids(self.tokenizer), dtype=torch.long, device=dev)
        rows = B * n
        out = torch.full((rows, max_new), sep, dtype=torch.long)
        blocker = NgramBlocker(cfg.no_repeat_ngram_size, rows) if cfg.no_repeat_ngram_size else None
        favour = None
        if cfg.encoder_repetition_penalty != 1.0:
            favour = source_token_mask(src, self.model.word_embeddings.shape[0], special_ids(self.tokenizer))
            favour = favour.to(dev).repeat_interleave(n, 0)
        with torch.inference_mode():
            dec = CachedUniLM(self.model)
            h = dec.prefill(ids.to(dev), lengths, max_new)
            expand = torch.arange(B, device=dev).repeat_interleave(n)
            dec.select(expand)  # the source was encoded once; its cache is shared by n samples
            h = h.index_select(0, expand)
            alive = torch.arange(rows, device=dev)  # original row of each active row
            for t in range(max_new):
                logits = self.model.lm_logits(h).float()
                if favour is not None:
                    logits = favour_tokens(logits, favour[alive], cfg.encoder_repetition_penalty)
                logits[:, banned] = float("-inf")
                if t == 0:
                    logits[:, sep] = float("-inf")  # at least one token (bert4keras minlen=1)
                if blocker is not None:
                    alive_rows = alive.tolist()
                    blocker.apply(logits, alive_rows)
                tok = pick_tokens(logits, cfg, gen)
                out[alive.cpu(), t] = tok.cpu()
                if blocker is not None:
                    blocker.push(alive_rows, tok.tolist())
                done = tok == sep
                if bool(done.all()) or t == max_new - 1:
                    break
                if bool(done.any()):
                    keep = (~done).nonzero().squeeze(-1)
                    dec.select(keep)
                    alive, tok = alive[keep], tok[keep]
                h = dec.step(tok, t)
        result: list[list[list[int]]] = []
        for i in range(B):
            samples = []
            for s in range(n):
                row = out[i * n + s].tolist()
                samples.append(row[: row.index(sep)] if sep in row else row)
            result.append(samples)
        return result

    def generate(
        self,
        texts: str | Sequence[str],
        n: int = 1,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        max_length: int | None = None,
        seed: int | None = None,
        mask_idxs: Sequence[int] | None = None,
        no_repeat_ngram_size: int = 0,
        encoder_repetition_penalty: float = 1.0,
    ) -> list[list[str]]:
        """n sampled paraphrases per text: a list (one per text) of n strings.

        ``top_k`` / ``top_p`` / ``temperature`` shape the sampling (``temperature=0`` is
        greedy); ``max_length`` caps the generated tokens (default: the model's
        max_seq_length); ``mask_idxs`` replaces those token positions of every source
        (0 = first token after [CLS]) by [MASK] first, as RoFormer-Sim allows;
        ``no_repeat_ngram_size`` forbids repeated n-grams in an output;
        ``encoder_repetition_penalty`` > 1 favours the source's tokens (see
        :class:`SamplingConfig`). The same inputs and ``seed`` give the same outputs.
        """
        texts = [texts] if isinstance(texts, str) else texts
        ids = self.generate_ids(texts, n, top_k, top_p, temperature, max_length, seed, mask_idxs,
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
        k: int = 20,
        top_k: int | None = None,
        top_p: float | None = 0.95,
        temperature: float = 1.0,
        max_length: int | None = None,
        seed: int | None = None,
        mask_idxs: Sequence[int] | None = None,
        batch_size: int = 64,
        no_repeat_ngram_size: int = 0,
        encoder_repetition_penalty: float = 1.0,
        rerank: Rerank = "cosine",
        min_score: float | None = None,
    ) -> list[dict]:
        """SimBERT's ``gen_synonyms``: sample n, drop duplicates and the source, keep the k
        best (at most; those with ``score >= min_score`` if given).

        ``rerank='cosine'`` (SimBERT's) ranks by the cosine of the model's own sentence
        vectors to the source; ``'likelihood'`` by ``loglik``, the mean of the seq2seq
        log-likelihoods P(candidate | source) and P(source | candidate) (nats per token, see
        :mod:`simkit.likelihood`): fluent candidates that keep the source recoverable.
        Returns ``[{"text", "score", "cosine", "loglik"}, ...]`` best first.
        """
        if not isinstance(text, str):
            raise InputError(f"similar() takes one text (str); got {type(text).__name__}")
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"n={n!r}; expected an integer >= 1 (candidates to sample)")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k={k!r}; expected an integer >= 1 (candidates to keep)")
        if rerank not in get_args(Rerank):
            raise InputError(f"rerank={rerank!r}; expected one of {', '.join(get_args(Rerank))}")
        cands = self.generate([text], n, top_k, top_p, temperature, max_length, seed, mask_idxs,
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
                 if min_score is None or score[i] >= min_score][:k]
        return [{"text": unique[i], "score": float(score[i]), "cosine": float(cosine[i]),
                 "loglik": float(loglik[i])} for i in order]


def generate_uncached(
    model: SimBertModel,
    tokenizer: Tokenizer,
    source_ids: Sequence[int],
    max_length: int,
    cfg: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Reference decoder: one sample, the whole ``[CLS] src [SEP] out`` recomputed each step.

    Runs the model's own (Hugging Face) forward under the UniLM mask; used by the tests to
    check the cached decoder and by ``bench/generate.py`` as the naive baseline.
    """
    cfg = cfg or SamplingConfig(temperature=0)
    sep = tokenizer.sep_token_id
    banned = banned_ids(tokenizer)
    blocker = NgramBlocker(cfg.no_repeat_ngram_size, 1) if cfg.no_repeat_ngram_size else None
    favour = None
    if cfg.encoder_repetition_penalty != 1.0:
        favour = source_token_mask([source_ids], model.word_embeddings.shape[0], special_ids(tokenizer))
    out: list[int] = []
    with torch.inference_mode():
        for t in range(max_length):
            ids = torch.tensor([list(source_ids) + out])
            types = torch.tensor([[0] * len(source_ids) + [1] * len(out)])
            hs = model(ids, torch.ones_like(ids), types, unilm=True, output_hidden_states=False)
            logits = model.lm_logits(hs.last_hidden_state[:, -1]).float()
            if favour is not None:
                logits = favour_tokens(logits, favour, cfg.encoder_repetition_penalty)
            logits[:, banned] = float("-inf")
            if t == 0:
                logits[:, sep] = float("-inf")
            if blocker is not None:
                blocker.apply(logits, [0])
            tok = int(pick_tokens(logits, cfg, generator)[0])
            if tok == sep:
                break
            out.append(tok)
            if blocker is not None:
                blocker.push([0], [tok])
    return out
