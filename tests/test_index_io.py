"""Index directories: round trips, mmap, refusal of broken / foreign / newer ones; text queries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simkit.errors import FormatError, InputError
from simkit.fsutil import resolve_version
from simkit.index import LSHIndex, VectorIndex, load_index


def clustered(n, d=32, k=20, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 2
    return (centers[rng.integers(0, k, n)] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    both = clustered(n=1550)
    return both[:1500], both[1500:], [f"d{i}" for i in range(1500)]


@pytest.mark.parametrize("make", [
    lambda: VectorIndex(preset="flat"), lambda: VectorIndex(preset="ivf"), lambda: VectorIndex(preset="hnsw"),
    lambda: VectorIndex(preset="flat", metric="l2"), lambda: LSHIndex(nbits=64),
    lambda: LSHIndex(nbits=64, mode="multihash", n_tables=4, hash_bits=8),
    lambda: LSHIndex(nbits=64, mode="ivf", nlist=8, nprobe=3),
], ids=["flat", "ivf", "hnsw", "l2", "lsh", "lsh-multihash", "lsh-ivf"])
@pytest.mark.parametrize("mmap", [False, True])
def test_round_trip(tmp_path, data, make, mmap):
    X, Q, ids = data
    idx = make().add(X, ids, texts=[f"text {i}" for i in ids], metadata=[{"n": i} for i in range(len(ids))])
    idx.save(tmp_path / "idx")
    back = load_index(tmp_path / "idx", mmap=mmap)
    assert type(back) is type(idx) and len(back) == len(idx)
    assert back.search(Q, top_k=7) == idx.search(Q, top_k=7)
    assert back.get("d42") == {"id": "d42", "text": "text d42", "metadata": {"n": 42}}
    cfg = json.loads((resolve_version(tmp_path / "idx") / "config.json").read_text())
    assert cfg["format"] == "simkit-index" and cfg["format_version"] == 1 and cfg["count"] == 1500
    assert cfg["dim"] == 32 and cfg["metric"] == idx.metric and cfg["simkit_version"]


def test_loaded_index_grows_without_touching_the_saved_dir(tmp_path, data):
    X, _, ids = data
    VectorIndex(preset="flat").add(X[:1000], ids[:1000]).save(tmp_path / "idx")
    back = load_index(tmp_path / "idx")
    back.add(X[1000:], ids[1000:])
    assert len(back) == 1500 and len(load_index(tmp_path / "idx")) == 1000  # on disk: unchanged
    with pytest.raises(InputError, match="already exists"):
        back.save(tmp_path / "idx")
    back.save(tmp_path / "idx", overwrite=True)
    assert load_index(tmp_path / "idx").search(X[1200], top_k=1)[0]["id"] == "d1200"
    mm = load_index(tmp_path / "idx", mmap=True)
    with pytest.raises(InputError, match="read-only"):
        mm.remove(["d1"])


def test_broken_directories(tmp_path, data):
    X, _, ids = data
    VectorIndex(preset="flat").add(X, ids).save(tmp_path / "idx")
    cfg_file = resolve_version(tmp_path / "idx") / "config.json"
    cfg = json.loads(cfg_file.read_text())
    # truncated FAISS file
    faiss_file = resolve_version(tmp_path / "idx") / "index.faiss"
    good = faiss_file.read_bytes()
    faiss_file.write_bytes(good[: len(good) // 2])
    with pytest.raises(FormatError, match=str(faiss_file)):
        load_index(tmp_path / "idx")
    faiss_file.write_bytes(b"not faiss at all")
    with pytest.raises(FormatError, match="index.faiss"):
        load_index(tmp_path / "idx")
    faiss_file.write_bytes(good)
    # newer format version, foreign artifact, missing dir
    cfg_file.write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(FormatError, match="format_version 99 is not supported"):
        load_index(tmp_path / "idx")
    cfg_file.write_text(json.dumps({**cfg, "format": "simkit-embeddings"}))
    with pytest.raises(FormatError, match="expected format 'simkit-index'"):
        load_index(tmp_path / "idx")
    with pytest.raises(FormatError, match="not found"):
        load_index(tmp_path / "nope")
    # a store that disagrees with the config
    cfg_file.write_text(json.dumps({**cfg, "count": 7}))
    with pytest.raises(FormatError, match="config.json says"):
        load_index(tmp_path / "idx")
    # truncated LSH arrays
    LSHIndex(nbits=64).add(X, ids).save(tmp_path / "lsh")
    vec = resolve_version(tmp_path / "lsh") / "vectors.npy"
    vec.write_bytes(vec.read_bytes()[:1000])
    with pytest.raises(FormatError, match="vectors.npy"):
        load_index(tmp_path / "lsh")
    # IVF-mode lists that point past the centroids
    LSHIndex(nbits=64, mode="ivf", nlist=8).add(X, ids).save(tmp_path / "lsh-ivf")
    np.save(resolve_version(tmp_path / "lsh-ivf") / "lists.npy", np.full(len(ids), 8, np.int64))
    with pytest.raises(FormatError, match="lists.npy disagree with config.json"):
        load_index(tmp_path / "lsh-ivf")


def test_transform_saved_with_index(tmp_path, data):
    from simkit.transforms import Chain, Normalize, Whitening

    X, Q, ids = data
    chain = Chain([Whitening(n_components=12), Normalize()]).fit(X)
    idx = VectorIndex(preset="flat", metric="ip", transform=chain).add(X, ids)
    idx.save(tmp_path / "idx")
    back = load_index(tmp_path / "idx")
    assert (back.dim_in_, back.dim_) == (32, 12)
    a, b = back.search(Q, top_k=5), idx.search(Q, top_k=5)
    assert [[h["id"] for h in r] for r in a] == [[h["id"] for h in r] for r in b]
    # the reloaded whitening recomputes its bias in float32: equal to ~1e-6, not bit for bit
    np.testing.assert_allclose([[h["score"] for h in r] for r in a], [[h["score"] for h in r] for r in b], atol=1e-5)
    cfg = json.loads((resolve_version(tmp_path / "idx") / "config.json").read_text())
    assert cfg["transform"] == "transform" and [s["class"] for s in cfg["transform_steps"]] == ["Whitening", "Normalize"]


def test_search_text_with_stored_model(tmp_path, tiny_model_dir, texts):
    from simkit.encoder import Encoder
    from simkit.transforms import Chain, Whitening

    enc = Encoder(tiny_model_dir)
    vecs = enc.encode(texts)
    chain = Chain([Whitening(n_components=16)]).fit(vecs)
    ids = [f"t{i}" for i in range(len(texts))]
    idx = VectorIndex(preset="flat", transform=chain, model=enc).add(vecs, ids, texts)
    hit = idx.search_text(texts[4], top_k=3, encoder=enc)[0]
    assert hit["id"] == "t4" and hit["text"] == texts[4] and hit["score"] == pytest.approx(1.0, abs=1e-4)
    idx.save(tmp_path / "idx")
    back = load_index(tmp_path / "idx")
    assert back.model_ref_["pooling"] == enc.pooling and back.model_ref_["model"] == str(tiny_model_dir)
    # no encoder given: the stored model reference is loaded, the stored transform applied
    a, b = back.search_text(texts[:3], top_k=2), idx.search_text(texts[:3], top_k=2, encoder=enc)
    assert [[h["id"] for h in r] for r in a] == [[h["id"] for h in r] for r in b]
    np.testing.assert_allclose([[h["score"] for h in r] for r in a], [[h["score"] for h in r] for r in b], atol=1e-3)
    with pytest.raises(InputError, match="no model reference"):
        VectorIndex().add(vecs).search_text("x")
