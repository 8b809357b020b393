"""simkit → sentence-transformers export, checked with stock sentence-transformers, and back."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from conftest import TEXTS
from sentence_transformers import SentenceTransformer

from simkit.encoder import Encoder
from simkit.errors import FormatError, InputError
from simkit.export import export_sentence_transformers
from simkit.models.checkpoint import load_model
from simkit.transforms import Chain, Normalize, RandomProjection, Whitening, save_transform


def _st_encode(path) -> np.ndarray:
    st = SentenceTransformer(str(path), device="cpu")
    return st.encode(TEXTS, batch_size=8, convert_to_numpy=True)


@pytest.mark.parametrize("pooling", ["cls", "pooler", "last-avg", "first-last-avg"])
def test_stock_sentence_transformers_encodes_as_simkit(tiny_model_dir, pooling, tmp_path):
    enc = Encoder(tiny_model_dir, pooling=pooling)
    out = export_sentence_transformers(tiny_model_dir, tmp_path / "st", pooling=pooling)
    np.testing.assert_allclose(_st_encode(out), enc.encode(TEXTS), atol=1e-5, rtol=0)
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    assert modules == {"cls": ["Transformer", "Pooling"], "last-avg": ["Transformer", "Pooling"],
                       "pooler": ["Transformer", "Pooling", "Dense"],
                       "first-last-avg": ["Transformer", "WeightedLayerPooling", "Pooling"]}[pooling]


@pytest.mark.parametrize("tail", ["whitening+normalize", "jl"])
def test_transform_tail_becomes_dense_and_normalize(tiny_model_dir, tail, tmp_path):
    enc = Encoder(tiny_model_dir)  # the model's own pooling: SimBERT's linear pooler
    X = enc.encode(TEXTS)
    # A random tiny model's vectors vary by ~1e-3 per dimension: whitening fitted on them has
    # entries ~300 and turns float32 rounding (1e-7) into 1e-4 in simkit and ST alike. Fit on
    # a spread like a trained model's (std 0.1), so the comparison measures the export.
    rng = np.random.default_rng(0)
    fit = np.concatenate([X + 0.1 * rng.standard_normal(X.shape, dtype=np.float32) for _ in range(3)])
    steps = [Whitening(8), Normalize()] if tail == "whitening+normalize" else [RandomProjection(8, random_state=0)]
    chain = Chain(steps).fit(fit)
    save_transform(chain, tmp_path / "t")
    out = export_sentence_transformers(enc, tmp_path / "st", transform=chain, max_seq_length=24)
    got = _st_encode(out)
    np.testing.assert_allclose(got, chain.transform(X), atol=1e-5, rtol=0)
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 24
    if tail == "whitening+normalize":
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)


def test_export_refuses_what_sentence_transformers_cannot_express(tiny_bert_dir, tmp_path):
    from simkit.models.factory import build_vocab, new_model

    enc = Encoder(tiny_bert_dir)
    wrong_dim = Whitening(4).fit(np.random.default_rng(0).normal(size=(50, 16)))
    with pytest.raises(InputError, match="fitted on dimension 16, but the vectors before it have 32"):
        export_sentence_transformers(enc, tmp_path / "a", transform=wrong_dim)
    with pytest.raises(InputError, match="not fitted"):
        export_sentence_transformers(enc, tmp_path / "b", transform=Whitening(4))
    with pytest.raises(InputError, match="unknown pooling 'max'"):
        export_sentence_transformers(enc, tmp_path / "c", pooling="max")
    pytest.importorskip("jieba")
    model, tok = new_model("bert", build_vocab(TEXTS), pre_tokenize="jieba", hidden_size=32, num_layers=1,
                           num_heads=2, intermediate_size=64, max_position=64)
    from simkit.models.checkpoint import ModelInfo

    jieba_enc = Encoder.from_model(model, tok, ModelInfo("bert", pooling="cls"))
    with pytest.raises(InputError, match="jieba word segmentation .* cannot be expressed"):
        export_sentence_transformers(jieba_enc, tmp_path / "d")
    assert not any(p.name.startswith(("a", "b", "c", "d")) for p in tmp_path.iterdir())


# ------------------------------------------------------------------ the reverse direction
@pytest.mark.parametrize("pooling", ["pooler", "first-last-avg"])
def test_exported_directory_loads_back_in_simkit(tiny_model_dir, pooling, tmp_path):
    enc = Encoder(tiny_model_dir, pooling=pooling)
    out = export_sentence_transformers(enc, tmp_path / "st")
    back = Encoder(out)
    assert back.pooling == pooling and back.max_seq_length == enc.max_seq_length
    np.testing.assert_allclose(back.encode(TEXTS), enc.encode(TEXTS), atol=1e-6, rtol=0)


def test_plain_sentence_transformers_directory_loads(tiny_bert_dir, tmp_path):
    """A directory written by sentence-transformers itself (its current layout and names)."""
    from sentence_transformers.base.modules import Normalize as STNormalize
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    model, tok, _ = load_model(tiny_bert_dir)
    hf = tmp_path / "hf"
    model.backbone.save_pretrained(str(hf))
    tok.save(hf)
    for mode, tail in (("cls", []), ("mean", [STNormalize()])):
        st = SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=40), Pooling(32, mode), *tail],
                                 device="cpu")
        st.save(str(tmp_path / mode))
        m, _, info = load_model(tmp_path / mode)
        assert info.pooling == {"cls": "cls", "mean": "last-avg"}[mode] and info.max_seq_length == 40
        enc = Encoder(tmp_path / mode)
        expected = st.encode(TEXTS, batch_size=8)
        np.testing.assert_allclose(enc.encode(TEXTS, normalize_embeddings=bool(tail)), expected, atol=1e-5, rtol=0)


def test_st_modules_simkit_cannot_express_are_refused(tiny_bert_dir, tmp_path):
    enc = Encoder(tiny_bert_dir)
    X = enc.encode(TEXTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = export_sentence_transformers(enc, tmp_path / "w", transform=Whitening(8).fit(X))
    with pytest.raises(FormatError, match=r"module 3 \(sentence_transformers.models.Dense\) after pooler pooling"):
        load_model(out)
    out = export_sentence_transformers(enc, tmp_path / "m", pooling="cls")
    cfg = out / "1_Pooling" / "config.json"
    raw = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**raw, "pooling_mode_cls_token": False, "pooling_mode_max_tokens": True}))
    with pytest.raises(FormatError, match="pooling max has no simkit equivalent"):
        load_model(out)


def test_cli_export_sentence_transformers(tiny_bert_dir, tmp_path):
    from simkit_cli.app import app
    from typer.testing import CliRunner

    enc = Encoder(tiny_bert_dir, pooling="cls")
    chain = Chain([Normalize()]).fit(enc.encode(TEXTS))
    save_transform(chain, tmp_path / "t")
    args = ["export", "sentence-transformers", str(tiny_bert_dir), "-o", str(tmp_path / "st"),
            "--pooling", "cls", "--transform", str(tmp_path / "t"), "--max-seq-length", "20"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["modules"] == ["Transformer", "Pooling", "Normalize"] and info["dim"] == 32
    np.testing.assert_allclose(_st_encode(tmp_path / "st"), chain.transform(enc.encode(TEXTS)), atol=1e-5)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "already exists" in again.stderr
    bad = CliRunner().invoke(app, [*args[:5], "--max-seq-length", "1000", "--overwrite"])
    assert bad.exit_code == 2 and bad.stderr.startswith("simkit: usage error: --max-seq-length 1000: expected 3..")
    zero = CliRunner().invoke(app, [*args[:5], "--max-seq-length", "0", "--overwrite"])  # was 64, silently
    assert zero.exit_code == 2 and zero.stderr.startswith("simkit: usage error: --max-seq-length 0: expected 3..")


def test_bundled_trained_model_with_whitening_exports_exactly(tmp_path):
    """A trained model (vectors vary ~1 per dimension): whitening needs no help to compare."""
    from pathlib import Path

    from simkit import assets

    if not (assets.DEFAULT_MODEL / "config.json").is_file():
        pytest.skip("no bundled default model in this checkout")
    corpus_file = Path(assets.__file__).parent / "data" / "demo_corpus.txt"
    corpus = [ln for ln in corpus_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
    enc = Encoder(assets.default_model_dir())
    X = enc.encode(corpus)
    chain = Chain([Whitening(16), Normalize()]).fit(X)
    out = export_sentence_transformers(enc, tmp_path / "st", transform=chain)
    got = SentenceTransformer(str(out), device="cpu").encode(corpus, batch_size=8)
    np.testing.assert_allclose(got, chain.transform(X), atol=1e-5, rtol=0)
