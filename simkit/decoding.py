"""UniLM decoding for SimBERT / RoFormer-Sim: batched sampling with a KV cache, and a reference.

The source goes in as segment 0 (``[CLS] text [SEP]``); the output is sampled as segment 1
under the UniLM mask until ``[SEP]``. Segment 0 never sees segment 1, so its keys / values
are computed once per source and cached; every later step runs one token per sequence
through the backbone's own modules (embeddings, q/k/v, output, FFN) with its own absolute
position: ``len(source_i) + t``. Hugging Face's cache path is not used because RoFormerModel
forces ``use_cache=False`` outside decoder mode and derives RoPE positions from one scalar
past length for the whole batch, which is wrong for right-padded sources of unequal length.

>>> decode(model, tokenizer, [[cls, 8, 9, sep]], n=4, max_new_tokens=16,
...        cfg=SamplingConfig(top_p=0.95), seed=0, device="cpu")      # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .collate import pad_batch
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


def decode(model: SimBertModel, tokenizer: Tokenizer, src: list[list[int]], n: int, max_new: int,
           cfg: SamplingConfig, seed: int | None, device: torch.device | str) -> list[list[list[int]]]:
    """Token ids (no [SEP]) of ``n`` samples per source id row: ``out[i][s]``, batched, cached."""
    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(int(seed) if seed is not None else int(torch.seed()))
    B = len(src)
    ids = pad_batch(src, tokenizer.pad_token_id)["input_ids"]
    lengths = torch.tensor([len(x) for x in src], dtype=torch.long, device=dev)
    sep = tokenizer.sep_token_id
    banned = torch.tensor(banned_ids(tokenizer), dtype=torch.long, device=dev)
    rows = B * n
    out = torch.full((rows, max_new), sep, dtype=torch.long)
    blocker = NgramBlocker(cfg.no_repeat_ngram_size, rows) if cfg.no_repeat_ngram_size else None
    favour = None
    if cfg.encoder_repetition_penalty != 1.0:
        favour = source_token_mask(src, model.word_embeddings.shape[0], special_ids(tokenizer))
        favour = favour.to(dev).repeat_interleave(n, 0)
    with torch.inference_mode():
        dec = CachedUniLM(model)
        h = dec.prefill(ids.to(dev), lengths, max_new)
        expand = torch.arange(B, device=dev).repeat_interleave(n)
        dec.select(expand)  # the source was encoded once; its cache is shared by n samples
        h = h.index_select(0, expand)
        alive = torch.arange(rows, device=dev)  # original row of each active row
        for t in range(max_new):
            logits = model.lm_logits(h).float()
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


def generate_uncached(
    model: SimBertModel,
    tokenizer: Tokenizer,
    source_ids: Sequence[int],
    max_new_tokens: int,
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
        for t in range(max_new_tokens):
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
