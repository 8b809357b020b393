"""Paraphrase scoring and reranking: seq2seq log-likelihood, rerank='likelihood', min_score,
and the encoder repetition penalty."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from simkit_cli.app import app
from typer.testing import CliRunner

from simkit.decoding import CachedUniLM, generate_uncached
from simkit.errors import InputError
from simkit.generate import Paraphraser
from simkit.likelihood import log_likelihood
from simkit.sampling import SamplingConfig, favour_tokens, source_token_mask, special_ids

SOURCES = ["花呗怎么还款", "明天会下雨吗", "一个男人在弹吉他"]
TARGETS = ["花呗如何还", "明天下雨", "男人在海边弹吉他，他们在散步"]


@pytest.fixture(scope="module", params=["bert", "roformer"])
def para(request, tiny_bert_dir, tiny_roformer_dir):
    path = tiny_bert_dir if request.param == "bert" else tiny_roformer_dir
    return Paraphraser(str(path))


def _stepwise_loglik(para, source: str, target: str) -> float:
    # Independent path: the KV-cache decoder fed the target token by token (teacher forcing).
    tok, model = para.tokenizer, para.model
    src, _ = tok.encode_batch([source], para.max_seq_length)
    tgt = tok.tokenize_ids([target])[0] + [tok.sep_token_id]
    with torch.inference_mode():
        dec = CachedUniLM(model)
        h = dec.prefill(torch.tensor(src), torch.tensor([len(src[0])]), len(tgt))
        total = 0.0
        for t, token in enumerate(tgt):
            total += float(model.lm_logits(h).float().log_softmax(-1)[0, token])
            if t < len(tgt) - 1:
                h = dec.step(torch.tensor([token]), t)
    return total / len(tgt)


def test_log_likelihood_equals_teacher_forced_decoding(para):
    # Batched (padded, unequal lengths) scores equal the cached decoder's, pair by pair.
    got = para.log_likelihood(SOURCES, TARGETS, batch_size=2)
    assert got.shape == (3,) and got.dtype == np.float32 and (got < 0).all()
    for i in range(3):
        assert got[i] == pytest.approx(_stepwise_loglik(para, SOURCES[i], TARGETS[i]), abs=1e-4)
    # padding and batch size do not change a pair's score
    one = [float(para.log_likelihood([s], [t])[0]) for s, t in zip(SOURCES, TARGETS)]
    np.testing.assert_allclose(got, one, atol=1e-5)


def test_log_likelihood_bad_input(para):
    with pytest.raises(InputError, match="2 sources but 1 targets"):
        para.log_likelihood(SOURCES[:2], TARGETS[:1])
    with pytest.raises(InputError, match="batch_size=0"):
        para.log_likelihood(SOURCES, TARGETS, batch_size=0)
    with pytest.raises(InputError, match="sources must be a list of str"):
        para.log_likelihood("花呗", ["花呗"])
    with pytest.raises(InputError, match="target 0"):
        log_likelihood(para.model, para.tokenizer, ["花呗"], ["   "], 32)


def test_similar_rerank_likelihood(para):
    kw = dict(n=16, top_k=16, seed=0, max_new_tokens=8)
    by_cos = para.similar("花呗怎么还款", **kw)
    by_ll = para.similar("花呗怎么还款", rerank="likelihood", **kw)
    assert {r["text"] for r in by_cos} == {r["text"] for r in by_ll}  # same candidates
    assert all(r["score"] == r["cosine"] for r in by_cos)
    assert all(r["score"] == r["loglik"] for r in by_ll)
    lls = [r["loglik"] for r in by_ll]
    assert lls == sorted(lls, reverse=True) and lls != [r["loglik"] for r in by_cos]
    best = by_ll[0]["text"]
    fwd = para.log_likelihood(["花呗怎么还款"], [best])[0]
    bwd = para.log_likelihood([best], ["花呗怎么还款"])[0]
    assert by_ll[0]["loglik"] == pytest.approx((fwd + bwd) / 2, abs=1e-5)
    # min_score keeps exactly the candidates at or above it
    cut = lls[len(lls) // 2]
    kept = para.similar("花呗怎么还款", rerank="likelihood", min_score=cut, **kw)
    assert [r["text"] for r in kept] == [r["text"] for r in by_ll if r["score"] >= cut]
    assert para.similar("花呗怎么还款", rerank="likelihood", min_score=1.0, **kw) == []
    with pytest.raises(InputError, match="rerank='bleu'.*cosine, likelihood"):
        para.similar("花呗怎么还款", rerank="bleu", **kw)


def test_favour_tokens_semantics():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    mask = torch.tensor([[True, True, False, False]])
    got = favour_tokens(logits, mask, 2.0)
    assert got.tolist() == [[4.0, -1.0, 2.0, -2.0]]  # favoured either way; others untouched
    assert favour_tokens(logits, mask, 0.5).tolist() == [[1.0, -4.0, 2.0, -2.0]]


def test_source_token_mask_skips_special(para):
    tok = para.tokenizer
    src, _ = tok.encode_batch(["花呗"], 32)
    mask = source_token_mask(src, para.model.word_embeddings.shape[0], special_ids(tok))
    assert set(mask[0].nonzero().flatten().tolist()) == set(src[0][1:-1])


def test_encoder_repetition_penalty(para):
    # Cached batched decoding applies the penalty exactly like the one-row reference.
    got = para.generate_ids(SOURCES, n=2, temperature=0, max_new_tokens=10, encoder_repetition_penalty=3.0)
    src, _ = para.tokenizer.encode_batch(SOURCES, para.max_seq_length)
    plain = para.generate_ids(SOURCES, n=1, temperature=0, max_new_tokens=10)
    for i, ids in enumerate(src):
        ref = generate_uncached(para.model, para.tokenizer, ids, 10,
                                SamplingConfig(temperature=0, encoder_repetition_penalty=3.0))
        assert got[i][0] == got[i][1] == ref
    # and it moves outputs toward the source's tokens
    def overlap(outs):
        return sum(t in set(src[i]) for i, rows in enumerate(outs) for t in rows[0])
    assert overlap(got) > overlap(plain)
    with pytest.raises(InputError, match="encoder_repetition_penalty=0"):
        para.generate("花呗", encoder_repetition_penalty=0)


def test_paraphrase_cli_rerank(tiny_bert_dir):
    def run(*args):
        return CliRunner().invoke(app, ["-q", "paraphrase", "花呗怎么还款", "-n", 12, "--seed", 0,
                                        "--max-new-tokens", 8, "--model", str(tiny_bert_dir), *map(str, args)])
    r = run("--rerank", "likelihood", "--min-score", -1e9)
    assert r.exit_code == 0, r.output
    cands = json.loads(r.stdout)["candidates"]
    assert cands and set(cands[0]) == {"text", "score", "cosine", "loglik"}
    assert [c["score"] for c in cands] == [c["loglik"] for c in cands]
    r = run("--rerank", "likelihood", "--min-score", 0)  # log-likelihoods are < 0
    assert r.exit_code == 0 and json.loads(r.stdout)["candidates"] == []
    r = run("--rerank", "bleu")
    assert r.exit_code == 2 and "'--rerank': 'bleu'" in r.stderr and "likelihood" in r.stderr  # usage error
