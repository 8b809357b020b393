"""``simkit whiten`` / ``simkit project`` through typer's CliRunner on small seeded stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from simkit_cli.app import app
from typer.testing import CliRunner

from simkit.fsutil import atomic_dir
from simkit.store import EmbeddingStore
from simkit.transforms import Whitening, load_transform

runner = CliRunner()


def make_store(path, n=600, d=24, seed=0, bad_row=None):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 2).astype(np.float32)
    if bad_row is not None:
        X[bad_row, 1] = np.nan
    with atomic_dir(path) as tmp:
        EmbeddingStore.write(tmp, X, [f"id{i}" for i in range(n)],
                             {"model": "tiny", "pooling": "cls", "normalize_embeddings": True})
    return X


def run(*args):
    result = runner.invoke(app, ["-q", *map(str, args)])
    return result, (json.loads(result.stdout) if result.exit_code == 0 else None)


def test_whiten_fit_and_apply(tmp_path):
    X = make_store(tmp_path / "emb")
    res, out = run("whiten", "fit", tmp_path / "emb", "--n-components", 8, "-o", tmp_path / "w")
    assert res.exit_code == 0, res.output
    assert out["dim_in"] == 24 and out["dim_out"] == 8 and out["count"] == 600
    assert out["transform"][0]["class"] == "Whitening" and not out["streaming"]
    res, out = run("whiten", "apply", tmp_path / "w", tmp_path / "emb", "-o", tmp_path / "e8",
                   "--chunk-size", 97)
    assert res.exit_code == 0, res.output
    store = EmbeddingStore.load(tmp_path / "e8")
    expected = Whitening(8).fit(X).transform(X)
    np.testing.assert_allclose(store.embeddings, expected, atol=1e-5)
    assert store.ids == [f"id{i}" for i in range(600)]
    m = store.manifest
    assert m["dim"] == 8 and m["count"] == 600 and m["model"] == "tiny"
    assert m["normalize_embeddings"] is False  # whitened vectors are no longer unit length
    assert m["transform"]["steps"][0]["n_components"] == 8
    assert m["transform"]["path"] == str((tmp_path / "w").resolve())
    assert len(m["transforms"]) == 1 and m["source_embeddings"] == str(tmp_path / "emb")


def test_streaming_equals_in_memory_and_normalize(tmp_path):
    make_store(tmp_path / "emb")
    res, _ = run("whiten", "fit", tmp_path / "emb", "--n-components", 6, "-o", tmp_path / "a")
    assert res.exit_code == 0, res.output
    res, b = run("whiten", "fit", tmp_path / "emb", "--n-components", 6, "--streaming", "--chunk-size", 50,
                 "--normalize", "-o", tmp_path / "b")
    assert res.exit_code == 0, res.output
    assert b["streaming"] and b["chunk_size"] == 50
    assert [s["class"] for s in b["transform"]] == ["Whitening", "Normalize"]
    ka = load_transform(tmp_path / "a").steps[0].kernel_
    kb = load_transform(tmp_path / "b").steps[0].kernel_
    np.testing.assert_allclose(ka, kb, rtol=1e-5, atol=1e-6)
    res, _ = run("whiten", "apply", tmp_path / "b", tmp_path / "emb", "-o", tmp_path / "e")
    assert res.exit_code == 0, res.output
    emb = EmbeddingStore.load(tmp_path / "e")
    np.testing.assert_allclose(np.linalg.norm(emb.embeddings, axis=1), 1, atol=1e-5)
    assert emb.manifest["normalize_embeddings"] is True


def test_project_fit_and_apply(tmp_path):
    X = make_store(tmp_path / "emb", n=50, d=400)
    res, out = run("project", "fit", tmp_path / "emb", "--n-components", "auto", "--eps", 0.5,
                   "--kind", "sparse", "--seed", 3, "-o", tmp_path / "p")
    assert res.exit_code == 0, res.output
    assert out["dim_out"] == 187 and out["kind"] == "sparse" and out["seed"] == 3
    res, _ = run("project", "fit", tmp_path / "emb", "--n-components", 16, "--seed", 3, "-o", tmp_path / "q")
    assert res.exit_code == 0, res.output
    res, _ = run("project", "apply", tmp_path / "q", tmp_path / "emb", "-o", tmp_path / "e")
    assert res.exit_code == 0, res.output
    rp = load_transform(tmp_path / "q").steps[0]
    assert np.array_equal(EmbeddingStore.load(tmp_path / "e").embeddings, X @ rp.components_.T)


def test_project_auto_refuses_k_ge_d(tmp_path):
    make_store(tmp_path / "emb", n=1000, d=32)
    res, _ = run("project", "fit", tmp_path / "emb", "--n-components", "auto", "-o", tmp_path / "p")
    assert res.exit_code == 1
    assert "needs k=5920" in res.stderr and "d=32" in res.stderr
    res, _ = run("project", "fit", tmp_path / "emb", "--n-components", "lots", "-o", tmp_path / "p")
    assert res.exit_code == 2 and "'lots'" in res.stderr  # a bad option value is a usage error (issue 17)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("streaming", [False, True])
def test_nan_row_named_with_its_row_in_the_file(tmp_path, streaming):
    make_store(tmp_path / "emb", bad_row=437)
    flags = ["--streaming", "--chunk-size", 100] if streaming else []
    res, _ = run("whiten", "fit", tmp_path / "emb", "--n-components", 4, *flags, "-o", tmp_path / "w")
    assert res.exit_code == 1
    assert "embeddings.npy: row 437 contains NaN" in res.stderr


def test_apply_errors(tmp_path):
    make_store(tmp_path / "emb")
    make_store(tmp_path / "other", d=10)
    make_store(tmp_path / "nan", bad_row=250)
    assert run("whiten", "fit", tmp_path / "emb", "--n-components", 4, "-o", tmp_path / "w")[0].exit_code == 0
    res, _ = run("whiten", "apply", tmp_path / "w", tmp_path / "other", "-o", tmp_path / "o")
    assert res.exit_code == 1 and "holds 10-dim vectors" in res.stderr and "expects 24" in res.stderr
    res, _ = run("whiten", "apply", tmp_path / "w", tmp_path / "nan", "-o", tmp_path / "o",
                 "--chunk-size", 100)
    assert res.exit_code == 1 and "row 250 contains NaN" in res.stderr
    assert not (tmp_path / "o").exists()  # atomic: nothing half-written
    res, _ = run("whiten", "apply", tmp_path / "emb", tmp_path / "emb", "-o", tmp_path / "o")
    assert res.exit_code == 1 and "config.json: not found" in res.stderr
    res, _ = run("whiten", "fit", tmp_path / "emb", "--n-components", 4, "-o", tmp_path / "w")
    assert res.exit_code == 1 and "already exists" in res.stderr
    # option values the library refuses are usage errors naming the option, not errors about the file
    for args, message in ((["--n-components", 99], "--n-components 99: expected 1..24 (the input has 24 dimensions)"),
                          (["--eps", 2], "--eps 2.0: expected a float in (0, 1), e.g. 1e-6")):
        res, _ = run("whiten", "fit", tmp_path / "emb", *args, "-o", tmp_path / "w2")
        assert res.exit_code == 2 and res.stderr == f"simkit: usage error: {message}\n", res.stderr
    res, _ = run("project", "fit", tmp_path / "emb", "--n-components", 0, "-o", tmp_path / "w2")
    assert res.exit_code == 2 and "usage error: --n-components 0: expected 'auto' or an int in 1..24" in res.stderr
    res, _ = run("whiten", "fit", tmp_path / "emb", "--n-components", 4, "--overwrite", "-o", tmp_path / "w")
    assert res.exit_code == 0


def test_rank_deficient_warning_on_stderr(tmp_path):
    make_store(tmp_path / "emb", n=10, d=24)
    res, out = run("whiten", "fit", tmp_path / "emb", "-o", tmp_path / "w")
    assert res.exit_code == 0, res.output
    assert out["n_degenerate"] == 15 and "rank-deficient" in res.stderr
