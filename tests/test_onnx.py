"""backend='onnx' (fp32, int8), its export directory, and token-budget batching.

The accuracy gate runs on the bundled *trained* model: int8 on random weights says nothing
(degenerate activations give cosines of 0.88-0.95 whatever the implementation).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from simkit.encoder import Encoder, _batches
from simkit.errors import FormatError, InputError
from simkit.pooling import POOLINGS

pytest.importorskip("onnxruntime")

# Real sentences of several lengths (short questions to a long news-style line), so that
# the token budget forms batches of different sizes.
SENTENCES = [
    "花呗怎么还款", "借呗可以提前还款吗", "我的花呗额度为什么降低了", "今天天气怎么样",
    "一个男人在弹吉他", "孩子发烧了应该怎么办", "如何修改银行卡绑定的手机号", "好",
    "请问怎样才能把信用卡的账单分期，分期以后每个月还多少钱，手续费怎么算",
    "国家统计局今天发布数据显示，十月份全国居民消费价格同比上涨百分之二点一，环比持平",
    "两只狗在草地上奔跑", "这部电影讲的是什么故事", "附近有什么好吃的餐厅推荐一下",
]


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "default"
    Encoder().export_onnx(path)
    return path


@pytest.fixture(scope="module")
def reference():
    enc = Encoder()
    return enc.encode_poolings(SENTENCES, POOLINGS, normalize_embeddings=True)


@pytest.mark.parametrize("dtype, gate", [("fp32", 0.999), ("int8", 0.99)])
def test_accuracy_gate_on_the_trained_model(default_export, reference, dtype, gate):
    enc = Encoder(backend="onnx", dtype=dtype, onnx_dir=default_export)
    got = enc.encode_poolings(SENTENCES, POOLINGS, normalize_embeddings=True)
    for p in POOLINGS:
        cos = (got[p] * reference[p]).sum(1)
        assert cos.min() >= gate, (p, cos.min())
    if dtype == "fp32":  # same graph, same numbers up to kernel rounding
        np.testing.assert_allclose(got["pooler"], reference["pooler"], atol=1e-4)


def test_bf16_gate_on_the_trained_model(reference):
    got = Encoder(dtype="bf16").encode(SENTENCES, normalize_embeddings=True)
    assert (got * reference["pooler"]).sum(1).min() >= 0.999


def test_export_config_records_versions(default_export):
    import onnx
    import onnxruntime

    cfg = json.loads((default_export / "config.json").read_text())
    assert cfg["format"] == "simkit-onnx" and cfg["opset"] == 17
    assert cfg["onnxruntime_version"] == onnxruntime.__version__
    assert cfg["onnx_version"] == onnx.__version__
    assert cfg["fingerprint"] == Encoder().fingerprint
    assert set(cfg["files"]) == {"fp32", "int8"}
    onnx.checker.check_model(str(default_export / "model.onnx"))


def test_load_refuses_other_runtime_and_other_weights(tmp_path, default_export, tiny_bert_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in default_export.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "onnxruntime_version": "0.0.1"}))
    with pytest.raises(FormatError, match=r"config\.json.*onnxruntime version '0\.0\.1'.*this process"):
        Encoder(backend="onnx", onnx_dir=bad)
    with pytest.raises(InputError, match="other weights"):
        Encoder(tiny_bert_dir, backend="onnx", onnx_dir=default_export)
    with pytest.raises(FormatError, match="not found"):
        Encoder(backend="onnx", onnx_dir=tmp_path / "missing")
    (bad / "config.json").write_text(json.dumps(cfg))
    with open(bad / "model_int8.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(FormatError, match="model_int8.onnx: its sha256 differs"):
        Encoder(backend="onnx", dtype="int8", onnx_dir=bad)


def test_export_leaves_the_torch_model_in_eval_mode(tiny_roformer_dir, tmp_path, texts):
    enc = Encoder(tiny_roformer_dir)
    before = enc.encode(texts)
    enc.export_onnx(tmp_path / "x")
    assert not any(m.training for m in enc.model.modules())
    np.testing.assert_array_equal(enc.encode(texts), before)


def test_cache_export_and_threads(tmp_path, monkeypatch, tiny_model_dir, texts):
    monkeypatch.setenv("SIMKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIMKIT_NUM_THREADS", "1")
    ref = Encoder(tiny_model_dir).encode(texts)
    enc = Encoder(tiny_model_dir, backend="onnx")
    assert enc.session_.get_session_options().intra_op_num_threads == 1
    (cached,) = [p for p in (tmp_path / "cache" / "onnx").iterdir() if not p.name.endswith(".lock")]  # the writer lock stays
    stamp = (cached / "model.onnx").stat().st_mtime_ns
    again = Encoder(tiny_model_dir, backend="onnx", num_threads=2)
    assert again.session_.get_session_options().intra_op_num_threads == 2
    assert (cached / "model.onnx").stat().st_mtime_ns == stamp  # reused, not re-exported
    np.testing.assert_allclose(again.encode(texts), ref, atol=1e-4)
    assert again.model_card["backend"] == "onnx"


def test_backend_dtype_combinations(tiny_bert_dir):
    with pytest.raises(InputError, match="int8.*CPU.*device='cuda'"):
        Encoder(tiny_bert_dir, dtype="int8", device="cuda")
    with pytest.raises(InputError, match="no bfloat16"):
        Encoder(tiny_bert_dir, backend="onnx", dtype="bf16")
    with pytest.raises(InputError, match="backend"):
        Encoder(tiny_bert_dir, backend="tensorrt")
    with pytest.raises(InputError, match="max_tokens_per_batch"):
        Encoder(tiny_bert_dir, max_tokens_per_batch=-1)


def test_pipeline_passes_backend(tmp_path, monkeypatch, tiny_bert_dir, texts):
    from simkit.pipeline import Pipeline

    monkeypatch.setenv("SIMKIT_CACHE", str(tmp_path / "cache"))
    p = Pipeline(tiny_bert_dir, backend="onnx", dtype="fp32")
    assert p.encoder.backend == "onnx" and p.replace(pooling="cls").backend == "onnx"
    np.testing.assert_allclose(p.encode(texts), Pipeline(tiny_bert_dir).encode(texts), atol=1e-4)


def test_saved_pipeline_carries_its_export_and_refuses_another_runtime(tmp_path, monkeypatch, tiny_bert_dir,
                                                                        texts):
    from simkit.fsutil import resolve_version
    from simkit.pipeline import Pipeline
    from simkit.transforms import Normalize

    monkeypatch.setenv("SIMKIT_CACHE", str(tmp_path / "cache"))
    p0 = Pipeline(tiny_bert_dir, backend="onnx", dtype="int8")
    p = p0.then(Normalize().fit(p0.encode(texts)))
    want = p.encode(texts)
    p.save(tmp_path / "pipe")
    version = resolve_version(tmp_path / "pipe")
    cfg = json.loads((version / "config.json").read_text())
    assert cfg["backend"] == "onnx" and cfg["dtype"] == "int8" and cfg["onnx"] == "onnx"
    assert {"model.onnx", "model_int8.onnx", "config.json"} <= {f.name for f in (version / "onnx").iterdir()}
    monkeypatch.setenv("SIMKIT_CACHE", str(tmp_path / "empty-cache"))  # the saved export runs, not a cache
    back = Pipeline.load(tmp_path / "pipe")
    assert (back.backend, back.dtype) == ("onnx", "int8")
    np.testing.assert_allclose(back.encode(texts), want, atol=1e-5)
    assert not (tmp_path / "empty-cache").exists()
    assert Pipeline.load(tmp_path / "pipe", backend="torch", dtype="fp32").encoder.backend == "torch"
    # The torch pipeline records its backend and carries no export.
    Pipeline(tiny_bert_dir).save(tmp_path / "plain")
    plain = json.loads((resolve_version(tmp_path / "plain") / "config.json").read_text())
    assert plain["backend"] == "torch" and plain["onnx"] is None
    assert not (resolve_version(tmp_path / "plain") / "onnx").exists()
    # Another ONNX Runtime than the one recorded: refused at load, naming the file.
    export_cfg = version / "onnx" / "config.json"
    export_cfg.write_text(json.dumps({**json.loads(export_cfg.read_text()), "onnxruntime_version": "0.0.1"}))
    with pytest.raises(FormatError, match=r"onnx/config\.json.*onnxruntime version '0\.0\.1'"):
        Pipeline.load(tmp_path / "pipe")
    cfg["onnx"] = "../elsewhere"
    (version / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="'onnx' must be"):
        Pipeline.load(tmp_path / "pipe")


def test_cli_encode_backend(tmp_path, monkeypatch, tiny_bert_dir, texts):
    from simkit_cli.app import app
    from typer.testing import CliRunner

    from simkit.store import EmbeddingStore

    monkeypatch.setenv("SIMKIT_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["-q", "encode", str(corpus), "-m", str(tiny_bert_dir), "-o",
                                   str(tmp_path / "emb"), "--backend", "onnx", "--dtype", "int8"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["backend"] == "onnx"
    got = EmbeddingStore.load(tmp_path / "emb").embeddings
    assert got.shape == (len(texts), 32)


# -- token-budget batching ----------------------------------------------------------------
def test_batches_follow_the_token_budget():
    lengths = [40, 30, 10, 10, 10, 10, 5, 5]
    order = np.arange(len(lengths))
    got = [b.tolist() for b in _batches(lengths, order, 2, 40)]
    assert got == [[0], [1], [2, 3, 4, 5], [6, 7]]  # a batch never holds more than 40 tokens
    assert [b.tolist() for b in _batches(lengths, order, 3, 0)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [b.tolist() for b in _batches(lengths, order, 3, 1)] == [[i] for i in range(8)]


def test_token_budget_keeps_results_and_order(tiny_model_dir, texts):
    enc = Encoder(tiny_model_dir, pooling="last-avg")
    ref = enc.encode(texts, batch_size=1, max_tokens_per_batch=0)
    calls = []
    orig = enc.model.forward
    enc.model.forward = lambda *a, **k: calls.append(a[0].shape) or orig(*a, **k)
    for budget in (1, 37, 200, 10_000, None):
        calls.clear()
        got = enc.encode(texts, batch_size=4, max_tokens_per_batch=budget)
        assert np.abs(got - ref).max() <= 1e-5, budget
        if budget:
            assert all(b * w <= budget or b == 1 for b, w in calls)
    enc.model.forward = orig
    # short texts go in larger batches than batch_size; without a budget, batch_size each
    short = ["好"] * 40
    enc.model.forward = lambda *a, **k: calls.append(a[0].shape) or orig(*a, **k)
    calls.clear()
    enc.encode(short, batch_size=4, max_tokens_per_batch=4 * 32)
    assert len(calls) == 1 and calls[0][0] == 40
    calls.clear()
    enc.encode(short, batch_size=4)
    assert len(calls) == 10
    budgeted = Encoder(tiny_model_dir, pooling="last-avg", max_tokens_per_batch=4 * 32)
    borig = budgeted.model.forward
    budgeted.model.forward = lambda *a, **k: calls.append(a[0].shape) or borig(*a, **k)
    calls.clear()
    budgeted.encode(short, batch_size=4)
    assert len(calls) == 1


# -- STS agreement on the valid splits (slow; needs the shared data) -----------------------
STS_DIR = Path(os.environ.get("SIMKIT_STS_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "chinese-sts"))


@pytest.mark.slow
@pytest.mark.skipif(not STS_DIR.is_dir(), reason=f"no STS data in {STS_DIR} (set SIMKIT_STS_DIR)")
def test_sts_spearman_within_half_a_point(default_export):
    """Every fast path scores within 0.5 Spearman points of torch fp32 on each valid split
    (the first 500 pairs of each, to keep the suite short on 2 busy cores)."""
    from simkit_eval.data import TASKS, load_senteval
    from simkit_eval.scoring import spearman

    encoders = {"torch fp32": Encoder(), "torch bf16": Encoder(dtype="bf16"),
                "onnx fp32": Encoder(backend="onnx", onnx_dir=default_export),
                "onnx int8": Encoder(backend="onnx", dtype="int8", onnx_dir=default_export),
                "torch int8": Encoder(dtype="int8")}
    for task in TASKS:
        ds = load_senteval(STS_DIR, task, "valid").head(500)
        scores = {}
        for name, enc in encoders.items():
            a = enc.encode(ds.sentences1, normalize_embeddings=True)
            b = enc.encode(ds.sentences2, normalize_embeddings=True)
            scores[name] = 100 * spearman((a * b).sum(1), ds.labels)
        print(task, {k: round(v, 2) for k, v in scores.items()})  # shown with pytest -s
        for name, s in scores.items():
            assert abs(s - scores["torch fp32"]) <= 0.5, (task, name, scores)


def test_onnx_streams_share_the_threads(tmp_path, monkeypatch, tiny_bert_dir, texts):
    monkeypatch.setenv("SIMKIT_CACHE", str(tmp_path / "cache"))
    ref = Encoder(tiny_bert_dir, backend="onnx", num_threads=2).encode(texts * 3, batch_size=2)
    enc = Encoder(tiny_bert_dir, backend="onnx", num_threads=2, num_streams=2)
    assert enc.session_.get_session_options().intra_op_num_threads == 1
    np.testing.assert_array_equal(enc.encode(texts * 3, batch_size=2), ref)
