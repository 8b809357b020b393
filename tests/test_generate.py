"""Cached UniLM generation: equal to full recomputation, deterministic, UniLM-correct."""

from __future__ import annotations

import warnings

import pytest
import torch

from simkit.decoding import CachedUniLM, generate_uncached
from simkit.errors import InputError
from simkit.generate import Paraphraser
from simkit.models.checkpoint import load_model
from simkit.sampling import SamplingConfig, pick_tokens

SOURCES = ["花呗怎么还款", "明天会下雨吗", "一个男人在弹吉他，他们在海边散步"]


@pytest.fixture(scope="module", params=["bert", "roformer"])
def para(request, tiny_bert_dir, tiny_roformer_dir):
    path = tiny_bert_dir if request.param == "bert" else tiny_roformer_dir
    return Paraphraser(str(path))


def test_greedy_cached_equals_full_recomputation(para):
    # Batched (sources of different lengths, right-padded) and cached vs one-at-a-time HF forward.
    got = para.generate_ids(SOURCES, n=2, temperature=0, max_new_tokens=12)
    src, _ = para.tokenizer.encode_batch(SOURCES, para.max_seq_length)
    for i, ids in enumerate(src):
        ref = generate_uncached(para.model, para.tokenizer, ids, 12)
        assert got[i][0] == ref, (i, got[i][0], ref)
        assert got[i][1] == ref  # greedy: both samples identical
        assert len(ref) >= 1


def _ngrams(ids, n):
    return [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]


@pytest.mark.parametrize("size", [1, 2])
def test_no_repeat_ngram_size(para, size):
    # Random tiny models loop readily, so without the blocker some output repeats an n-gram.
    free = para.generate_ids(SOURCES, n=6, temperature=1.0, max_new_tokens=24, seed=0)
    assert any(len(set(_ngrams(x, size))) < len(_ngrams(x, size)) for rows in free for x in rows)
    got = para.generate_ids(SOURCES, n=6, temperature=1.0, max_new_tokens=24, seed=0, no_repeat_ngram_size=size)
    for rows in got:
        for x in rows:
            assert len(set(_ngrams(x, size))) == len(_ngrams(x, size)), x
    # the cached, batched decoder blocks exactly like the one-row reference (greedy: no sampling noise)
    greedy = para.generate_ids(SOURCES, n=2, temperature=0, max_new_tokens=16, no_repeat_ngram_size=size)
    src, _ = para.tokenizer.encode_batch(SOURCES, para.max_seq_length)
    for i, ids in enumerate(src):
        ref = generate_uncached(para.model, para.tokenizer, ids, 16,
                                SamplingConfig(temperature=0, no_repeat_ngram_size=size))
        assert greedy[i][0] == greedy[i][1] == ref


def test_no_repeat_ngram_size_checked(para):
    with pytest.raises(InputError, match="no_repeat_ngram_size=-1"):
        para.generate("花呗", no_repeat_ngram_size=-1)


def test_cached_logits_match_full_forward(para):
    # Stronger than token equality: the hidden state of every generated step matches.
    model, tok = para.model, para.tokenizer
    src, _ = tok.encode_batch(SOURCES[:2], 32)
    gen = [[7, 9, 11, 13], [8, 10, 12, 14]]
    L = max(len(x) for x in src)
    ids = torch.full((2, L), tok.pad_token_id)
    for i, x in enumerate(src):
        ids[i, : len(x)] = torch.tensor(x)
    lengths = torch.tensor([len(x) for x in src])
    with torch.inference_mode():
        dec = CachedUniLM(model)
        hs = [dec.prefill(ids, lengths, 4)]
        for t in range(3):
            hs.append(dec.step(torch.tensor([g[t] for g in gen]), t))
        for i, x in enumerate(src):
            full = torch.tensor([x + gen[i][:3]])
            types = torch.tensor([[0] * len(x) + [1] * 3])
            ref = model(full, torch.ones_like(full), types, unilm=True).last_hidden_state[0]
            for t in range(4):
                torch.testing.assert_close(hs[t][i], ref[len(x) - 1 + t], atol=1e-4, rtol=1e-4)


def test_seed_determinism(para):
    a = para.generate(SOURCES, n=4, top_p=0.9, seed=123, max_new_tokens=8)
    b = para.generate(SOURCES, n=4, top_p=0.9, seed=123, max_new_tokens=8)
    c = para.generate(SOURCES, n=4, top_p=0.9, seed=124, max_new_tokens=8)
    assert a == b
    assert a != c
    assert len(a) == 3 and all(len(s) == 4 for s in a)


def test_unilm_segment0_unaffected_by_segment1(para):
    model, tok = para.model, para.tokenizer
    ids, types = tok.encode_pair([10, 11, 12, 13], [20, 21, 22])
    x = torch.tensor([ids])
    t = torch.tensor([types])
    y = x.clone()
    y[0, 7] = 30  # the second token of segment 1
    with torch.inference_mode():
        hx = model(x, torch.ones_like(x), t, unilm=True).last_hidden_state[0]
        hy = model(y, torch.ones_like(y), t, unilm=True).last_hidden_state[0]
    torch.testing.assert_close(hx[:7], hy[:7])  # segment 0 and earlier segment 1 unchanged
    assert not torch.allclose(hx[7:], hy[7:])


def test_sampling_filters():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    picks = {int(pick_tokens(logits, SamplingConfig(top_k=2), g)) for _ in range(60)}
    assert picks == {0, 1}
    # p(0) = 0.72 > 0.5: nucleus of one token.
    assert {int(pick_tokens(logits, SamplingConfig(top_p=0.5), g)) for _ in range(30)} == {0}
    assert int(pick_tokens(logits, SamplingConfig(temperature=0), g)) == 0


def test_similar_reranks_by_cosine(para):
    res = para.similar("花呗怎么还款", n=16, top_k=5, seed=0, max_new_tokens=8)
    assert 1 <= len(res) <= 5
    scores = [r["score"] for r in res]
    assert scores == sorted(scores, reverse=True)
    texts = [r["text"] for r in res]
    assert len(set(texts)) == len(texts) and "花呗怎么还款" not in texts
    vec = para.encoder.encode(["花呗怎么还款", texts[0]], normalize_embeddings=True)
    assert abs(float(vec[0] @ vec[1]) - scores[0]) < 1e-5


def test_mask_idxs(para):
    # Masked positions become [MASK] in the source: same as decoding the masked ids directly.
    got = para.generate_ids(["花呗怎么还款"], n=1, temperature=0, max_new_tokens=6, mask_idxs=[0, 2])
    src, _ = para.tokenizer.encode_batch(["花呗怎么还款"], 32)
    masked = list(src[0])
    masked[1] = masked[3] = para.tokenizer.mask_token_id
    assert got[0][0] == generate_uncached(para.model, para.tokenizer, masked, 6)
    with pytest.raises(InputError, match="mask_idxs"):
        para.generate(["花呗"], mask_idxs=[5])


def test_bad_input(para, tiny_bert_dir):
    with pytest.raises(InputError, match="non-empty"):
        para.generate([""])
    with pytest.raises(InputError, match="n=0"):
        para.generate(["花呗"], n=0)
    with pytest.raises(InputError, match=r"n=100000; expected an integer in 1\.\.1024"):  # was killed for memory
        para.generate(["花呗"], n=100000)
    with pytest.raises(InputError, match="min_score=nan; expected a finite number"):  # kept nothing, silently
        para.similar("花呗", n=2, min_score=float("nan"))
    with pytest.raises(InputError, match="^sample_top_k=0; expected"):  # was named top_k, similar()'s other one
        para.similar("花呗", n=2, sample_top_k=0)
    with pytest.raises(InputError, match="top_p"):
        para.generate(["花呗"], top_p=1.5)
    with pytest.raises(InputError, match="exceeds"):
        para.generate(["花呗"], max_new_tokens=500)
    with pytest.warns(UserWarning, match="truncated"):
        out = para.generate(["花呗怎么还款" * 20], n=1, max_new_tokens=4, seed=0)
    assert para.last_generate_info_["truncated"] == 1 and len(out[0]) == 1
    model, tok, info = load_model(tiny_bert_dir)
    model.lm_head = None
    with pytest.raises(InputError, match="no LM head"):
        Paraphraser.from_model(model, tok, info)


def test_roformer_positions_matter(tiny_roformer_dir):
    # A source padded in a batch must give the same greedy output as alone (positions per row).
    p = Paraphraser(str(tiny_roformer_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alone = p.generate_ids([SOURCES[0]], n=1, temperature=0, max_new_tokens=10)[0]
        batched = p.generate_ids(SOURCES, n=1, temperature=0, max_new_tokens=10)[0]
    assert alone == batched
