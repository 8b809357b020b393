"""The pipeline owns text -> stored vector: whitened stores, model mismatches, bare vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from simkit_cli.app import app
from typer.testing import CliRunner

from simkit.errors import InputError
from simkit.pipeline import Pipeline

runner = CliRunner()


def run(*args, code=0):
    res = runner.invoke(app, ["-q", *map(str, args)])
    assert res.exit_code == code, res.output + str(res.exception)
    return res


def hits(res):
    return [[(h["id"], round(h["score"], 5)) for h in json.loads(line)["results"]]
            for line in res.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def corpus(tmp_path, texts):
    f = tmp_path / "c.txt"
    f.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return f


def test_whiten_apply_store_answers_text_like_index_transform(tmp_path, corpus, tiny_bert_dir, texts):
    run("encode", corpus, "-m", tiny_bert_dir, "-o", tmp_path / "emb")
    run("whiten", "fit", tmp_path / "emb", "--n-components", 8, "-o", tmp_path / "w")
    run("whiten", "apply", tmp_path / "w", tmp_path / "emb", "-o", tmp_path / "embw")
    run("index", "build", tmp_path / "embw", "-o", tmp_path / "a")           # whitened store
    run("index", "build", tmp_path / "emb", "--transform", tmp_path / "w", "-o", tmp_path / "b")
    for q in (texts[3], "花呗还款"):
        a = hits(run("index", "query", tmp_path / "a", q, "-k", "5"))
        b = hits(run("index", "query", tmp_path / "b", q, "-k", "5"))
        assert [i for i, _ in a[0]] == [i for i, _ in b[0]]
        np.testing.assert_allclose([s for _, s in a[0]], [s for _, s in b[0]], atol=1e-4)
    from simkit.fsutil import resolve_version

    cfg = json.loads((resolve_version(tmp_path / "embw") / "pipeline" / "config.json").read_text())
    assert [s["class"] for s in cfg["steps"]] == ["Whitening"] and cfg["dim"] == 8


def test_same_dimension_other_model_is_refused(tmp_path, corpus, tiny_bert_dir, texts):
    from simkit.models.checkpoint import load_model, save_model

    model, tok, info = load_model(tiny_bert_dir)
    with __import__("torch").no_grad():
        model.backbone.embeddings.word_embeddings.weight.mul_(1.5)   # same shape, other weights
    other = tmp_path / "other"
    save_model(model, tok, info, other)
    run("index", "build", corpus, "-m", tiny_bert_dir, "-o", tmp_path / "idx")
    res = run("index", "query", tmp_path / "idx", texts[0], "-m", other, code=1)
    assert str(tiny_bert_dir.resolve()) in res.stderr and str(other) in res.stderr
    assert "other weights" in res.stderr and "Traceback" not in res.output
    with pytest.raises(InputError, match="other weights"):
        from simkit.index import load_index

        load_index(tmp_path / "idx").search_text("x", pipeline=Pipeline(other))
    # the model itself, named again (e.g. after a move), is accepted
    assert hits(run("index", "query", tmp_path / "idx", texts[0], "-m", tiny_bert_dir, "-k", "1"))[0][0][0] == "1"


def test_build_from_bare_vectors(tmp_path, texts):
    X = np.random.default_rng(0).standard_normal((len(texts), 16)).astype(np.float32)
    np.save(tmp_path / "v.npy", X)
    (tmp_path / "ids.txt").write_text("".join(f"d{i}\n" for i in range(len(texts))), encoding="utf-8")
    run("index", "build", tmp_path / "v.npy", "--ids", tmp_path / "ids.txt", "-o", tmp_path / "idx")
    np.save(tmp_path / "q.npy", X[5])
    assert hits(run("index", "query", tmp_path / "idx", "--vectors", tmp_path / "q.npy", "-k", "1"))[0][0][0] == "d5"
    res = run("index", "query", tmp_path / "idx", "花呗", code=1)
    assert "no model" in res.stderr
    # a directory with only embeddings.npy + ids.txt works the same
    (tmp_path / "bare").mkdir()
    np.save(tmp_path / "bare" / "embeddings.npy", X)
    (tmp_path / "bare" / "ids.txt").write_text((tmp_path / "ids.txt").read_text())
    out = json.loads(run("index", "build", tmp_path / "bare", "-o", tmp_path / "idx2").stdout)
    assert out["count"] == len(texts) and out["pipeline"] is None
    res = run("index", "build", tmp_path / "v.npy", "-o", tmp_path / "idx3", code=1)
    assert "--ids" in res.stderr


def test_pipeline_save_load_encodes_identically(tmp_path, tiny_bert_dir, texts):
    from simkit.transforms import Chain, Normalize, Whitening

    p = Pipeline(tiny_bert_dir)
    X = p.encode(texts)
    pw = p.then(Chain([Whitening(8), Normalize()]).fit(X))
    assert pw.dim == 8 and pw.normalize_embeddings and not p.normalize_embeddings
    pw.save(tmp_path / "p")
    back = Pipeline.load(tmp_path / "p")
    np.testing.assert_allclose(back.encode(texts), pw.encode(texts), atol=1e-5)
    assert back.fingerprint == p.fingerprint and back.transform_fingerprint == pw.transform_fingerprint
    assert back.encode(texts[0]).shape == (8,)


def test_index_refuses_store_from_another_pipeline(tmp_path, corpus, tiny_bert_dir, tiny_roformer_dir):
    run("encode", corpus, "-m", tiny_bert_dir, "-o", tmp_path / "e1")
    run("encode", corpus, "-m", tiny_roformer_dir, "-o", tmp_path / "e2")
    run("index", "build", tmp_path / "e1", "-o", tmp_path / "idx")
    res = run("index", "add", tmp_path / "idx", tmp_path / "e2", code=1)
    assert "other weights" in res.stderr


def test_eval_sts_defaults_to_bundled_model():
    import inspect

    from simkit_cli.eval import sts

    assert inspect.signature(sts).parameters["model"].default.default is None


def test_torch_int8_pipeline_round_trip(tmp_path, tiny_bert_dir, texts):
    """dtype='int8' on torch is recorded; like bf16 it is a runtime choice over the same
    weights (same fingerprint), so load(dtype='int8') runs it again and a plain load is fp32."""
    p = Pipeline(tiny_bert_dir, dtype="int8")
    X = p.encode(texts)
    p.save(tmp_path / "p")
    cfg = json.loads(next((tmp_path / "p").glob("v*/config.json")).read_text())
    assert (cfg["backend"], cfg["dtype"]) == ("torch", "int8")
    back = Pipeline.load(tmp_path / "p", dtype="int8")
    assert back.encoder.int8_backbone_ is not None and back.fingerprint == p.fingerprint
    np.testing.assert_array_equal(back.encode(texts), X)
    fp32 = Pipeline.load(tmp_path / "p")
    assert fp32.dtype == "fp32" and not np.array_equal(fp32.encode(texts), X)  # int8 did run


def test_streams_are_a_runtime_option_kept_by_every_copy(tmp_path, tiny_bert_dir, texts):
    """num_streams travels with from_encoder, replace, then and load (like num_threads) and
    is not part of what the pipeline is (its saved config)."""
    from simkit.encoder import Encoder
    from simkit.transforms import Normalize

    enc = Encoder(tiny_bert_dir, num_threads=2, num_streams=2)
    pipe = Pipeline.from_encoder(enc)
    assert pipe.num_streams == 2
    assert pipe.replace(pooling="cls").encoder.num_streams == 2  # a new encoder, same runtime
    assert pipe.then(Normalize()).num_streams == 2
    pipe.save(tmp_path / "p")
    assert "num_streams" not in json.dumps(pipe.to_dict())
    loaded = Pipeline.load(tmp_path / "p", num_streams=2, num_threads=2)
    np.testing.assert_allclose(loaded.encode(texts), pipe.encode(texts), atol=1e-5)
    assert loaded.encoder.num_streams == 2
