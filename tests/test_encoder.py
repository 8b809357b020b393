"""Encoder.encode: shapes, pooling against a direct transformers computation, batch invariance."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from simkit.encoder import Encoder
from simkit.errors import InputError
from simkit.pooling import POOLINGS


def _direct(enc: Encoder, text: str, pooling: str) -> np.ndarray:
    """The vector computed straight from the transformers backbone, one unpadded sentence."""
    ids, _ = enc.tokenizer.encode_batch([text], enc.max_seq_length)
    x = torch.tensor(ids)
    with torch.no_grad():
        hs = enc.model.backbone(input_ids=x, output_hidden_states=True).hidden_states
        W, b = enc.model.pooler.dense.weight, enc.model.pooler.dense.bias
    if pooling == "cls":
        v = hs[-1][0, 0]
    elif pooling == "pooler":
        v = hs[-1][0, 0] @ W.T + b
    elif pooling in ("last-avg", "mean"):
        v = hs[-1][0].mean(0)
    else:  # first-last-avg: output of transformer layer 1 (not the embeddings) and the last
        v = (hs[1][0].mean(0) + hs[-1][0].mean(0)) / 2
    return v.detach().numpy()


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_matches_direct_computation(tiny_model_dir, texts, pooling):
    enc = Encoder(tiny_model_dir, pooling=pooling)
    got = enc.encode(texts, batch_size=4)  # batches mix lengths, so padding is exercised
    for i in (0, 5, len(texts) - 1):
        np.testing.assert_allclose(got[i], _direct(enc, texts[i], pooling), atol=1e-5, rtol=1e-5)


def test_first_layer_is_not_the_embeddings(tiny_bert_dir, texts):
    enc = Encoder(tiny_bert_dir, pooling="first-last-avg")
    ids, _ = enc.tokenizer.encode_batch([texts[0]], 32)
    with torch.no_grad():
        hs = enc.model.backbone(input_ids=torch.tensor(ids), output_hidden_states=True).hidden_states
    wrong = ((hs[0][0].mean(0) + hs[-1][0].mean(0)) / 2).numpy()
    assert np.abs(enc.encode(texts[0]) - wrong).max() > 1e-3


def test_batch_size_invariance(tiny_model_dir, texts):
    enc = Encoder(tiny_model_dir, pooling="last-avg")
    ref = enc.encode(texts, batch_size=1)
    for bs in (2, 7, 64):
        assert np.abs(enc.encode(texts, batch_size=bs) - ref).max() <= 1e-5


def test_shapes_and_types(tiny_bert_dir, texts):
    enc = Encoder(tiny_bert_dir)
    assert enc.encode(texts[0]).shape == (32,)
    out = enc.encode(texts)
    assert out.shape == (len(texts), 32) and out.dtype == np.float32 and out.flags.c_contiguous
    assert enc.encode([]).shape == (0, 32)
    t = enc.encode(texts[:3], convert_to_numpy=False)
    assert isinstance(t, torch.Tensor) and t.shape == (3, 32)
    n = enc.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert enc.similarity(out[:2], out).shape == (2, len(texts))


def test_encode_poolings_one_pass(tiny_roformer_dir, texts):
    enc = Encoder(tiny_roformer_dir)
    calls = []
    orig = enc.model.forward
    enc.model.forward = lambda *a, **k: calls.append(1) or orig(*a, **k)
    both = enc.encode_poolings(texts, ["cls", "first-last-avg"], batch_size=64)
    assert len(calls) == 1
    enc.model.forward = orig
    np.testing.assert_allclose(both["cls"], Encoder(tiny_roformer_dir, pooling="cls").encode(texts), atol=1e-6)


def test_truncation_is_counted_and_warned(tiny_bert_dir, texts):
    enc = Encoder(tiny_bert_dir, max_seq_length=8)
    long = [t for t in texts if len(t) > 6]
    with pytest.warns(UserWarning, match=f"{len(long)} of {len(texts)} texts were longer"):
        enc.encode(texts)
    assert enc.last_encode_info_["truncated"] == len(long)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.encode(["短句"])  # nothing truncated: no warning


def test_bf16_close_to_fp32(tiny_bert_dir, texts):
    a = Encoder(tiny_bert_dir).encode(texts, normalize_embeddings=True)
    b = Encoder(tiny_bert_dir, dtype="bf16").encode(texts, normalize_embeddings=True)
    assert (a * b).sum(1).min() > 0.99


def test_save_load_identity(tmp_path, tiny_roformer_dir, texts):
    enc = Encoder(tiny_roformer_dir, pooling="first-last-avg", max_seq_length=16)
    enc.save(tmp_path / "saved")
    back = Encoder(tmp_path / "saved")
    assert back.pooling == "first-last-avg" and back.max_seq_length == 16
    np.testing.assert_array_equal(back.encode(texts), enc.encode(texts))
    with pytest.raises(InputError, match="already exists"):
        enc.save(tmp_path / "saved")


def test_bad_arguments(tiny_bert_dir):
    with pytest.raises(InputError, match="unknown pooling 'max'.*cls, pooler, last-avg"):
        Encoder(tiny_bert_dir, pooling="max")
    with pytest.raises(InputError, match="dtype"):
        Encoder(tiny_bert_dir, dtype="int4")
    with pytest.raises(InputError, match="max_seq_length=1000"):
        Encoder(tiny_bert_dir, max_seq_length=1000)
    enc = Encoder(tiny_bert_dir)
    with pytest.raises(InputError, match="batch_size"):
        enc.encode(["a"], batch_size=0)
    with pytest.raises(InputError, match="list of str"):
        enc.encode([1, 2])


def test_no_default_model_is_a_clear_error(monkeypatch):
    from simkit import assets

    monkeypatch.delenv("SIMKIT_MODEL", raising=False)
    monkeypatch.setattr(assets, "DEFAULT_MODEL", assets.ASSETS / "no-such-model")
    with pytest.raises(InputError, match="no model given"):
        Encoder()


def test_jieba_word_level_tokenization():
    pytest.importorskip("jieba")
    from simkit.models.factory import SPECIAL_TOKENS
    from simkit.tokenization import Tokenizer

    vocab = [*SPECIAL_TOKENS, "天气", "今", "天", "气", "不", "错", "不错"]
    word = Tokenizer.from_vocab(vocab, pre_tokenize="jieba")
    char = Tokenizer.from_vocab(vocab, pre_tokenize="none")
    # jieba cuts 今天天气 | 不错: the word in the vocabulary stays whole, the other one
    # (not in the vocabulary) falls back to characters, as in WoBERT.
    w = word.hf.convert_ids_to_tokens(word.tokenize_ids(["今天天气不错"])[0])
    c = char.hf.convert_ids_to_tokens(char.tokenize_ids(["今天天气不错"])[0])
    assert w == ["今", "天", "天", "气", "不错"]
    assert c == ["今", "天", "天", "气", "不", "错"]


def test_torch_int8_gate_on_the_trained_model(tmp_path):
    """dtype='int8' on torch: cosine >= 0.99 to fp32 for every pooling on the bundled trained
    model (random weights say nothing about int8), with the fp32 weights kept for saving."""
    sentences = ["花呗怎么还款", "借呗可以提前还款吗", "我的花呗额度为什么降低了", "好",
                 "请问怎样才能把信用卡的账单分期，分期以后每个月还多少钱，手续费怎么算",
                 "两只狗在草地上奔跑", "国家统计局今天发布数据显示，十月份全国居民消费价格同比上涨"]
    reference = Encoder().encode_poolings(sentences, POOLINGS, normalize_embeddings=True)
    enc = Encoder(dtype="int8")
    got = enc.encode_poolings(sentences, POOLINGS, normalize_embeddings=True)
    for p in POOLINGS:
        cos = (got[p] * reference[p]).sum(1)
        assert 0.99 <= cos.min() and cos.max() < 1 - 1e-7, (p, cos)  # int8 ran, and is close
    # The fp32 weights stay the model's: same fingerprint, and a save is the fp32 model.
    assert enc.fingerprint == Encoder().fingerprint
    assert enc.model.backbone.encoder.layer[0].attention.self.query.weight.dtype.is_floating_point
    enc.save(tmp_path / "m")
    again = Encoder(tmp_path / "m").encode(sentences, normalize_embeddings=True)
    np.testing.assert_allclose(again, reference["pooler"], atol=1e-5)


def _on_one_and_two_threads(enc: Encoder, texts, batch_size: int):
    """The encoder's vectors with torch on one thread, then on two (left on two)."""
    out = []
    for n in (1, 2):
        torch.set_num_threads(n)
        out.append(enc.encode(texts, batch_size=batch_size))
    return out


@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_streams_run_the_same_batches_side_by_side(tiny_model_dir, texts, dtype):
    """num_streams=2 runs batches on two threads of one intra-op thread each. The batches are
    those of one stream, so the vectors equal one stream's on one thread exactly (and on two
    threads up to the kernels' float rounding)."""
    import threading

    two = Encoder(tiny_model_dir, pooling="first-last-avg", dtype=dtype, num_threads=2,
                  num_streams=2)
    one = Encoder(tiny_model_dir, pooling="first-last-avg", dtype=dtype, num_threads=2)
    many = texts * 4
    ref1, ref2 = _on_one_and_two_threads(one, many, batch_size=3)
    seen = []
    real = two._hidden_states

    def spy(*a, **kw):
        seen.append((threading.current_thread().name, torch.get_num_threads(),
                     torch.is_inference_mode_enabled()))
        return real(*a, **kw)

    two._hidden_states = spy

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    got = two.encode_poolings(many, ["first-last-avg"], batch_size=3, progress_bar=bar)
    np.testing.assert_array_equal(got["first-last-avg"], ref1)
    np.testing.assert_allclose(got["first-last-avg"], ref2, atol=1e-5)
    assert bar.n == len(many)
    assert len(seen) == -(-len(many) // 3)
    assert all(name.startswith("simkit-stream") and n == 1 and inference
               for name, n, inference in seen)
    assert torch.get_num_threads() == 2  # the caller's threads are back


def test_streams_on_the_trained_model():
    """On the bundled model, two streams give one stream's vectors on one thread, and two
    threads' up to rounding (a real model's kernels split their sums by thread count)."""
    from simkit import assets

    if not (assets.DEFAULT_MODEL / "config.json").is_file():
        pytest.skip("no bundled default model in this checkout")
    texts = [f"花呗第{i}期怎么还款，逾期{i % 7}天会怎样" for i in range(40)]
    two = Encoder(dtype="int8", num_threads=2, num_streams=2)
    one = Encoder(dtype="int8", num_threads=2)
    got = two.encode(texts, batch_size=8)
    ref1, ref2 = _on_one_and_two_threads(one, texts, batch_size=8)
    np.testing.assert_array_equal(got, ref1)
    np.testing.assert_allclose(got, ref2, atol=1e-4)


def test_streams_are_checked(tiny_bert_dir):
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(InputError, match=r"num_streams=.*expected a positive integer"):
            Encoder(tiny_bert_dir, num_streams=bad)
    with pytest.raises(InputError, match="num_streams=2 runs batches side by side on the CPU"):
        Encoder(tiny_bert_dir, num_streams=2, device="cuda")
    try:
        with pytest.raises(InputError, match="num_streams=2 needs at least as many threads; "
                                             "num_threads is 1"):
            Encoder(tiny_bert_dir, num_threads=1, num_streams=2)
    finally:
        torch.set_num_threads(2)
