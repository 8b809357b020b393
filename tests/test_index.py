"""VectorIndex / LSHIndex: correctness against exact numpy search, ids, changes, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from simkit.errors import InputError
from simkit.fsutil import resolve_version
from simkit.index import LSHIndex, VectorIndex

N, D = 2000, 32


def clustered(n=N, d=D, k=20, seed=0, spread=0.3):
    """A mixture of k Gaussians (unnormalised), float32."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 2
    return (centers[rng.integers(0, k, n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    both = clustered(n=N + 50)  # queries from the same mixture as the corpus
    return both[:N], both[N:], [f"doc{i}" for i in range(N)]


def exact(X, Q, k, metric="cosine"):
    """Exact top-k (indices, scores) by numpy."""
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    S = Q @ X.T if metric != "l2" else -((Q[:, None, :] - X[None]) ** 2).sum(-1)
    idx = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(S, idx, 1)


def recall(hits, truth_idx, ids):
    got = [{h["id"] for h in row} for row in hits]
    return np.mean([len(g & {ids[j] for j in t}) / len(t) for g, t in zip(got, truth_idx)])


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_flat_is_exact(data, metric):
    X, Q, ids = data
    idx = VectorIndex(preset="flat", metric=metric).add(X, ids)
    hits = idx.search(Q, top_k=10)
    t_idx, t_s = exact(X, Q, 10, metric)
    assert [[h["id"] for h in row] for row in hits] == [[ids[j] for j in row] for row in t_idx]
    np.testing.assert_allclose([[h["score"] for h in row] for row in hits], t_s, rtol=1e-4, atol=1e-3)
    for row in hits:  # sorted by score, higher first, whatever the metric
        assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(row))


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_small_batches_across_the_blas_switch_are_exact_and_restore_faiss(data, metric):
    """From BLAS_MIN_QUERIES queries on, flat search goes through BLAS; every batch size
    gives the exact neighbours, and FAISS's process-wide settings are put back."""
    import faiss

    from simkit.index.factory import BLAS_MIN_QUERIES, search_tuning

    X, Q, ids = data
    idx = VectorIndex(preset="flat", metric=metric).add(X, ids)
    threshold, threads = faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()
    for nq in sorted({1, BLAS_MIN_QUERIES - 1, BLAS_MIN_QUERIES, 19, 20, 33}):
        t_idx, t_s = exact(X, Q[:nq], 10, metric)
        hits = idx.search(Q[:nq], top_k=10)
        assert [[h["id"] for h in row] for row in hits] == [[ids[j] for j in row] for row in t_idx], nq
        np.testing.assert_allclose([[h["score"] for h in row] for row in hits], t_s, rtol=1e-4, atol=1e-3)
        assert (faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()) == (threshold, threads)
    with search_tuning(BLAS_MIN_QUERIES):
        assert faiss.cvar.distance_compute_blas_threshold == 0
    for no_blas in (search_tuning(BLAS_MIN_QUERIES - 1), search_tuning(64, blas=False)):
        with no_blas:
            assert faiss.cvar.distance_compute_blas_threshold == threshold
    # overlapping users (as two threads would leave them: first in, first out) and an error
    a, b = search_tuning(64), search_tuning(64)
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert faiss.cvar.distance_compute_blas_threshold == 0  # b still searches
    b.__exit__(None, None, None)
    assert faiss.cvar.distance_compute_blas_threshold == threshold
    with pytest.raises(RuntimeError), search_tuning(64):
        raise RuntimeError("a failed search")
    assert faiss.cvar.distance_compute_blas_threshold == threshold


def test_l2_scores_do_not_depend_on_the_batch():
    """L2 stays on FAISS's exact scan whatever the batch size: a near duplicate of a large
    vector scores the same searched alone or with others (BLAS's |x|^2 + |y|^2 - 2 x.y
    would not)."""
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((500, 32)) * 100).astype(np.float32)
    Q = X[:16] + np.float32(1e-3)
    idx = VectorIndex(preset="flat", metric="l2").add(X)
    batch = idx.search(Q, top_k=3)
    alone = [idx.search(q, top_k=3) for q in Q]
    assert [[h["score"] for h in row] for row in batch] == [[h["score"] for h in row] for row in alone]


def test_single_query_and_k_larger_than_ntotal(data):
    X, Q, ids = data
    idx = VectorIndex().add(X[:7], ids[:7], texts=[f"t{i}" for i in range(7)], metadata=[{"i": i} for i in range(7)])
    one = idx.search(X[3], top_k=3)
    assert isinstance(one, list) and isinstance(one[0], dict)
    assert one[0] == {"id": "doc3", "score": pytest.approx(1.0, abs=1e-5), "text": "t3", "metadata": {"i": 3}}
    many = idx.search(Q[:2], top_k=100)
    assert [len(r) for r in many] == [7, 7]
    assert {h["id"] for h in many[0]} == set(ids[:7])


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_single_query_scores_like_a_batch_row(data, metric):
    """The 1-D float32 fast path and the general path agree bit for bit, and check alike."""
    X, Q, ids = data
    idx = VectorIndex(metric=metric).add(X, ids)
    batch = idx.search(Q[:4], top_k=5)
    assert [idx.search(q, top_k=5) for q in Q[:4]] == batch  # contiguous float32 rows: the fast path
    assert idx.search(np.asfortranarray(Q[:4])[1], top_k=5) == batch[1]  # a strided row: the general path
    assert idx.search(Q[2].astype(np.float64), top_k=5) == batch[2]
    for value, what in ((np.nan, "contains NaN or inf"), (np.inf, "contains NaN or inf")):
        q = Q[0].copy()
        q[7] = value
        with pytest.raises(InputError, match=f"row 0 {what}"):
            idx.search(q)
    # finite, but its squared norm overflows float32: FAISS would silently normalise it to zeros
    # (cosine) or find no neighbours for it (l2), so every metric refuses it, on both paths
    big = np.full(32, 1e20, np.float32)
    with pytest.raises(InputError, match="row 0 overflows float32"):
        idx.search(big)
    with pytest.raises(InputError, match="row 1 overflows float32"):
        idx.search(np.stack([Q[0], big]))
    with pytest.raises(InputError, match="vectors row 0 overflows float32"):
        VectorIndex(metric=metric).add(big[None])
    zero = idx.search(np.zeros(32, np.float32), top_k=3)  # a zero vector stays zero: every score 0
    assert [h["score"] for h in zero] == [0.0, 0.0, 0.0] or metric == "l2"


def test_ivf_no_minus_one_and_nprobe(data):
    X, Q, ids = data
    idx = VectorIndex("IVF16,Flat", metric="cosine").add(X, ids)
    few = idx.search(Q, top_k=1000, nprobe=1)  # one list holds fewer than 1000 vectors
    assert all(0 < len(r) < 1000 for r in few)
    assert all(h["id"] in set(ids) for r in few for h in r)
    full = idx.search(Q, top_k=10, nprobe=16)  # all lists probed: exact
    assert recall(full, exact(X, Q, 10)[0], ids) == 1.0
    assert idx._ivf.nprobe == 1  # the per-search value did not stick


@pytest.mark.parametrize("preset,min_recall", [("ivf", 0.9), ("hnsw", 0.95), ("ivfpq", 0.08)])
def test_presets_recall(data, preset, min_recall):
    # ivfpq here keeps 2 bytes a vector (PQ4x4 on 32 dims): far above chance (0.005), far from exact
    X, Q, ids = data
    idx = VectorIndex(preset=preset).add(X, ids)
    assert {"ivf": "IVF51,Flat", "hnsw": "HNSW32", "ivfpq": "IVF51,PQ4x4"}[preset] == idx.factory_
    assert recall(idx.search(Q, top_k=10), exact(X, Q, 10)[0], ids) >= min_recall


def test_hnsw_efsearch_and_no_remove(data):
    X, Q, ids = data
    idx = VectorIndex(preset="hnsw").add(X, ids)
    low = recall(idx.search(Q, top_k=10, efSearch=10), exact(X, Q, 10)[0], ids)
    high = recall(idx.search(Q, top_k=10, efSearch=400), exact(X, Q, 10)[0], ids)
    assert high >= low and high >= 0.98
    with pytest.raises(InputError, match="HNSW"):
        idx.remove(["doc1"])
    assert len(idx) == N and "doc1" in idx.store_
    with pytest.raises(InputError, match="efSearch applies to HNSW"):
        VectorIndex().add(X, ids).search(Q, efSearch=5)


def test_training_errors_and_warnings(data):
    X, _, _ = data
    with pytest.raises(InputError, match="at least 1000 training vectors"):
        VectorIndex("IVF1000,Flat").add(X[:500])
    with pytest.warns(UserWarning, match="below FAISS's recommended 39"):
        VectorIndex("IVF16,Flat").add(X[:500])
    with pytest.raises(InputError, match="invalid FAISS factory string 'Bogus12'"):
        VectorIndex("Bogus12").add(X)
    with pytest.raises(InputError, match="unknown preset 'fast'"):
        VectorIndex(preset="fast").add(X)


def test_incremental_add_equals_one_batch(data):
    X, Q, ids = data
    a = VectorIndex().add(X, ids)
    b = VectorIndex().add(X[:1200], ids[:1200]).add(X[1200:], ids[1200:])
    assert a.search(Q, top_k=5) == b.search(Q, top_k=5)


def test_ids_duplicates_upsert_remove(data):
    X, _, ids = data
    idx = VectorIndex(preset="flat").add(X[:100], ids[:100], texts=[f"t{i}" for i in range(100)])
    with pytest.raises(InputError, match="'doc5' is already in the index"):
        idx.add(X[5:6], ["doc5"])
    with pytest.raises(InputError, match="duplicate id 'x'"):
        idx.add(X[:2], ["x", "x"])
    with pytest.raises(InputError, match="all str or all int"):
        idx.add(X[:2], ["y", 3])
    with pytest.raises(InputError, match="this index has str ids"):
        idx.add(X[:1], [7])
    # upsert: doc5 now carries doc50's vector and a new text
    idx.upsert(X[50:51], ["doc5"], texts=["new"])
    assert len(idx) == 100
    top = idx.search(X[50], top_k=2)
    assert {h["id"] for h in top} == {"doc5", "doc50"} and idx.get("doc5")["text"] == "new"
    assert idx.remove(["doc50", "doc5"]) == 2 and len(idx) == 98
    assert all(h["id"] not in ("doc5", "doc50") for h in idx.search(X[50], top_k=98))
    with pytest.raises(InputError, match="unknown id 'nope'"):
        idx.remove(["nope"])


def test_int_ids_default_ids(data):
    X, _, _ = data
    idx = VectorIndex().add(X[:10])
    idx.add(X[10:20])
    assert sorted(h["id"] for h in idx.search(X[0], top_k=20)) == list(range(20))
    idx2 = VectorIndex().add(X[:3], ids=np.array([10, 20, 30]))
    assert idx2.search(X[1], top_k=1)[0]["id"] == 20


def test_bad_input(data):
    X, Q, ids = data
    with pytest.raises(InputError, match="empty"):
        VectorIndex().search(Q)
    idx = VectorIndex().add(X, ids)
    with pytest.raises(InputError, match="dimension 16, but this index expects dimension 32"):
        idx.search(np.zeros((2, 16), np.float32))
    with pytest.raises(InputError, match="dimension 16, but this index expects dimension 32"):
        idx.add(np.zeros((2, 16), np.float32), ["a", "b"])
    bad = X[:5].copy()
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match="row 3 contains NaN"):
        VectorIndex().add(bad)
    bad[3, 2] = np.inf  # inf turns into NaN in the normalisation; the input row is still named
    with pytest.raises(InputError, match="row 3 contains NaN or inf"):
        idx.search(bad)
    with pytest.raises(InputError, match="3 ids for 5 vectors"):
        VectorIndex().add(X[:5], ["a", "b", "c"])
    with pytest.raises(InputError, match="2 texts for 5 vectors"):
        VectorIndex().add(X[:5], texts=["a", "b"])
    with pytest.raises(InputError, match="top_k=0"):
        idx.search(Q, top_k=0)
    with pytest.raises(InputError, match="unknown metric 'dot'"):
        VectorIndex(metric="dot").add(X)


@pytest.mark.parametrize("cls", [VectorIndex, LSHIndex])
def test_cosine_leaves_callers_arrays_alone(data, cls):
    X, Q, ids = data
    X2, Q2 = 3 * X, 3 * Q  # not unit-norm: the index normalises its own copies
    before_x, before_q = X2.copy(), Q2.copy()
    idx = cls(metric="cosine").add(X2, ids)
    idx.search(Q2[0], top_k=3)
    idx.search(Q2, top_k=3)
    assert np.array_equal(X2, before_x) and np.array_equal(Q2, before_q)
    assert idx.search(X2[5], top_k=1)[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_transform_applied_to_corpus_and_queries(data):
    from simkit.transforms import Chain, Whitening

    X, Q, ids = data
    chain = Chain([Whitening(n_components=8)]).fit(X)
    idx = VectorIndex(transform=chain).add(X, ids)
    assert (idx.dim_in_, idx.dim_) == (32, 8)
    manual = VectorIndex().add(chain.transform(X), ids)
    assert idx.search(Q, top_k=5) == manual.search(chain.transform(Q), top_k=5)
    huge = np.full((2, 32), 3e38, np.float32)
    huge[0] = Q[0]
    with pytest.raises(InputError, match="the transform overflowed"):
        idx.search(huge)


def test_overflow_after_a_foreign_transform_is_named(data):
    class Scale:  # any object with transform(); it does not check its output as simkit's do
        def transform(self, X):
            with np.errstate(over="ignore"):
                return X * np.float32(1e17)  # corpus rows stay finite; a 1e3x query row does not

    X, Q, ids = data
    idx = VectorIndex(metric="ip", transform=Scale()).add(X, ids)
    q = Q[:2].copy()
    q[1] *= 1e3
    with pytest.raises(InputError, match="queries row 1 overflows float32"):
        idx.search(q)


# -- LSH ---------------------------------------------------------------------------------

def test_lsh_flat_recall_and_rerank_scores_exact(data):
    X, Q, ids = data
    idx = LSHIndex(nbits=128, rerank=10).add(X, ids)
    hits = idx.search(Q, top_k=10)
    t_idx, _ = exact(X, Q, 10)
    assert recall(hits, t_idx, ids) >= 0.9
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    for q, row in zip(Qn, hits):  # re-ranked scores are exact cosines, sorted
        np.testing.assert_allclose([h["score"] for h in row], [Xn[ids.index(h["id"])] @ q for h in row], rtol=1e-5)
        assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(row))
    # more candidates can only help
    assert recall(idx.search(Q, top_k=10, rerank=50), t_idx, ids) >= recall(hits, t_idx, ids)


def test_lsh_multihash_and_remove(data):
    X, Q, ids = data
    idx = LSHIndex(nbits=128, mode="multihash", n_tables=8, hash_bits=8, nflip=1).add(X, ids)
    hits = idx.search(Q, top_k=10)
    assert recall(hits, exact(X, Q, 10)[0], ids) >= 0.7
    assert all(h["id"] in set(ids) for r in hits for h in r)
    idx.remove(["doc0"])
    assert "doc0" not in {h["id"] for h in idx.search(X[0], top_k=50)} and len(idx) == N - 1


def test_lsh_ivf_probes_float_lists(data):
    X, Q, ids = data
    t_idx = exact(X, Q, 10)[0]
    flat = recall(LSHIndex(nbits=128, rerank=10).add(X, ids).search(Q, top_k=10), t_idx, ids)
    idx = LSHIndex(nbits=128, mode="ivf", nlist=16, nprobe=2, rerank=10).add(X, ids)
    assert idx.centroids_.shape == (16, D) and idx.lists_.shape == (N,) and idx.binary_.ntotal == N
    by_nprobe = [recall(idx.search(Q, top_k=10, nprobe=p), t_idx, ids) for p in (1, 2, 4, 16)]
    assert by_nprobe == sorted(by_nprobe) and by_nprobe[0] < by_nprobe[-1]
    assert by_nprobe[-1] >= flat - 0.02  # every list probed: the flat scan's candidates, up to ties
    assert recall(idx.search(Q, top_k=10), t_idx, ids) == by_nprobe[1]  # the stored default nprobe=2
    # scores are exact cosines, and changes keep lists and codes aligned
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    row = idx.search(Q[0], top_k=5, nprobe=16)
    np.testing.assert_allclose([h["score"] for h in row],
                               [Xn[ids.index(h["id"])] @ (Q[0] / np.linalg.norm(Q[0])) for h in row], rtol=1e-5)
    idx.remove(["doc3", "doc7"])
    assert len(idx) == N - 2 and idx.binary_.ntotal == N - 2 and idx.lists_.shape == (N - 2,)
    idx.add(X[3] * 2, ["again"])  # cosine: the same direction, the same list
    assert idx.search(X[3], top_k=1)[0]["id"] == "again"
    with pytest.raises(InputError, match="nprobe applies to mode='ivf'"):
        LSHIndex(nbits=64).add(X, ids).search(Q[0], nprobe=4)
    with pytest.raises(InputError, match="needs at least 64 training vectors"):
        LSHIndex(nbits=64, mode="ivf", nlist=64).add(X[:40])
    with pytest.warns(UserWarning, match="below FAISS's recommended 39"):
        LSHIndex(nbits=64, mode="ivf", nlist=64).add(X[:1000])
    with pytest.raises(InputError, match="nprobe=0"):
        LSHIndex(nbits=64, mode="ivf", nprobe=0).add(X)
    # the lists are seeded by random_state, like the projection
    same = [LSHIndex(nbits=64, mode="ivf", nlist=16, random_state=7).add(X).centroids_ for _ in range(2)]
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.array_equal(same[0], LSHIndex(nbits=64, mode="ivf", nlist=16, random_state=8).add(X).centroids_)


def test_lsh_refuses_ip_on_unnormalised(data):
    X, Q, ids = data
    with pytest.raises(InputError, match="unit-norm"):
        LSHIndex(metric="ip").add(X, ids)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert len(LSHIndex(metric="ip").add(Xn, ids).search(Q[0], top_k=3)) == 3
    with pytest.raises(InputError, match="multiple of 8"):
        LSHIndex(nbits=12).add(Xn)
    with pytest.raises(InputError, match=r"nbits=100000000; expected a multiple of 8 in 8\.\.8192"):  # hung
        LSHIndex(nbits=100_000_000).add(Xn)


def test_lsh_orthogonal_projection_blocks_and_recall(data):
    X, Q, ids = data
    idx = LSHIndex(nbits=80).add(X, ids)  # dim 32: orthonormal blocks of 32, 32 and 16 columns
    P = idx.projection_.astype(np.float64)
    for s, e in ((0, 32), (32, 64), (64, 80)):
        np.testing.assert_allclose(P[:, s:e].T @ P[:, s:e], np.eye(e - s), atol=1e-5)
    assert not np.allclose(P[:, :16], P[:, 64:80])  # blocks are independent draws
    gauss = LSHIndex(nbits=80, projection="gaussian").add(X, ids)
    assert not np.allclose(gauss.projection_.T @ gauss.projection_, np.diag(np.diag(gauss.projection_.T @ gauss.projection_)), atol=0.5)
    # orthogonal hyperplanes estimate angles with lower variance (Ji et al., 2012, "Super-Bit LSH"):
    # on random pairs, the Hamming angle estimate errs less, for every seed
    rng = np.random.default_rng(1)
    A = rng.standard_normal((3000, D)).astype(np.float32)
    B = A + 0.8 * rng.standard_normal((3000, D)).astype(np.float32)
    angle = np.arccos(np.sum(A * B, 1) / np.linalg.norm(A, axis=1) / np.linalg.norm(B, axis=1))

    def mse(kind, seed):
        h = LSHIndex(nbits=32, projection=kind, center=False, random_state=seed).add(A)
        est = np.unpackbits(h.hash(A) ^ h.hash(B), axis=1).mean(1) * np.pi
        return np.mean((est - angle) ** 2)

    for seed in range(3):
        assert mse("orthogonal", seed) < 0.9 * mse("gaussian", seed)
    with pytest.raises(InputError, match="projection"):
        LSHIndex(projection="sparse").add(X, ids)


def test_lsh_loads_indexes_saved_before_projection_option(data, tmp_path):
    import json

    X, Q, ids = data
    idx = LSHIndex(nbits=64, projection="gaussian").add(X, ids)
    idx.save(tmp_path / "old")
    cfg_path = resolve_version(tmp_path / "old") / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["projection"]
    cfg_path.write_text(json.dumps(cfg))
    from simkit.index import load_index

    back = load_index(tmp_path / "old")
    assert back.projection == "gaussian"
    np.testing.assert_array_equal(back.projection_, idx.projection_)
    assert [h["id"] for h in back.search(Q[0], top_k=5)] == [h["id"] for h in idx.search(Q[0], top_k=5)]
