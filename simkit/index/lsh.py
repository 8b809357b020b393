"""LSHIndex: sign random projections (SimHash) with Hamming search and an exact re-rank.

A vector ``x`` gets the code ``sign((x - mean) R)`` with ``R`` a (dim, nbits) random
matrix, packed 8 bits a byte. Hamming distance between codes estimates the angle between
vectors (Charikar, 2002). ``R`` has orthonormal columns by default (in blocks of ``dim`` when
``nbits > dim``): orthogonal hyperplanes estimate angles with lower variance than independent
Gaussian ones (Ji et al., 2012), so the same recall needs fewer candidates to re-rank. A search takes ``rerank * top_k`` candidates by Hamming distance,
then scores them exactly against the stored float vectors.

``mode='flat'`` scans every code (``faiss.IndexBinaryFlat``); ``mode='multihash'`` looks up
``n_tables`` hash tables keyed by disjoint ``hash_bits``-bit pieces of the code
(``faiss.IndexBinaryMultiHash``, with ``nflip`` bit flips per key) and only computes
Hamming distances for the vectors in the probed buckets: sub-linear, at some cost in recall.
``mode='ivf'`` partitions the vectors with spherical k-means on the *float* vectors
(``nlist`` lists, √N by default) and scans the codes of the ``nprobe`` lists nearest the query
(``faiss.IndexBinaryIVF`` fed precomputed assignments). Clustering the floats, not the codes,
matters: k-means in Hamming space (plain ``IndexBinaryIVF``) cut recall to 0.79-0.91 at
nprobe 4-64 on bench/index.py's 200k vectors, where float lists keep 0.996 at nprobe 4.

>>> idx = LSHIndex(nbits=256, mode="flat", rerank=10).add(X, ids)   # X: (n, 256) float32
>>> idx.search(X[:2], top_k=5)                                        # 2 lists of 5 hits
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from ..errors import FormatError, InputError, ParameterError, check_choice
from ..fsutil import cfg_value, load_npy
from . import factory as fx
from .base import BaseIndex

MODES = ("flat", "multihash", "ivf")
_DTYPES = {"projection": np.float32, "mean": np.float32, "vectors": np.float32, "codes": np.uint8,
           "labels": np.int64, "centroids": np.float32, "lists": np.int64}
PROJECTIONS = ("orthogonal", "gaussian")
_CHUNK = 256  # queries re-ranked at a time: bounds the (chunk, candidates, dim) gather


# 1 KB codes; the projection is dim x nbits floats (nbits=1e8 would need tens of GB).
MAX_NBITS = 8192

class LSHIndex(BaseIndex):
    """SimHash codes + FAISS binary index + exact re-rank of candidates.

    ``metric`` is ``cosine`` (vectors normalised internally) or ``ip`` (only for vectors that
    are already unit-norm: on other vectors the angle that SimHash estimates says nothing
    about the inner product, so that is refused). ``center`` subtracts the mean of the first
    batch before hashing, which spreads codes of anisotropic embeddings over more buckets.
    ``nlist`` / ``nprobe`` (mode ``ivf``) default to √N lists and ~3% of them; ``rerank``,
    ``nprobe`` and ``nflip`` can also be given per search. At 1M x 256 (bench/index.py) the
    ``ivf`` mode answers ~5x faster than the ``flat`` scan at the same recall.
    """

    kind = "lsh"

    def __init__(self, nbits: int = 256, *, metric: Literal["cosine", "ip"] = "cosine",
                 mode: Literal["flat", "multihash", "ivf"] = "flat", n_tables: int | None = None,
                 hash_bits: int = 16, nflip: int = 1, nlist: int | None = None,
                 nprobe: int | None = None, rerank: int = 10, center: bool = True,
                 projection: Literal["orthogonal", "gaussian"] = "orthogonal",
                 random_state: int | None = 0, transform: Any = None, pipeline: Any = None,
                 model: Any = None):
        self.nbits = nbits
        self.metric = metric
        self.mode = mode
        self.n_tables = n_tables
        self.hash_bits = hash_bits
        self.nflip = nflip
        self.nlist = nlist
        self.nprobe = nprobe
        self.rerank = rerank
        self.center = center
        self.projection = projection
        self.random_state = random_state
        self.transform = transform
        self.pipeline = pipeline
        self.model = model

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "projection_", None) is not None

    def _ntotal(self) -> int:
        return int(self.labels_.shape[0])

    # -- hashing ----------------------------------------------------------------------
    def _check_params(self) -> None:
        check_choice("metric", self.metric, ("cosine", "ip"))
        check_choice("mode", self.mode, MODES)
        check_choice("projection", self.projection, PROJECTIONS)
        if (not isinstance(self.nbits, (int, np.integer)) or self.nbits < 8 or self.nbits % 8
                or self.nbits > MAX_NBITS):
            raise ParameterError("nbits", self.nbits, f"a multiple of 8 in 8..{MAX_NBITS} "
                             "(codes are packed to bytes)")
        if isinstance(self.rerank, bool) or not isinstance(self.rerank, (int, np.integer)) or self.rerank < 1:
            raise InputError(f"rerank={self.rerank}; expected >= 1 (candidates = rerank * top_k)")
        if self.mode == "multihash" and self._tables() * self.hash_bits > self.nbits:
            raise InputError(f"n_tables * hash_bits = {self._tables()} * {self.hash_bits} exceeds nbits={self.nbits}")
        for name in ("nlist", "nprobe"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
                raise ParameterError(name, value, "a positive integer (or None for the default)")

    def _tables(self) -> int:
        return int(self.n_tables) if self.n_tables is not None else max(1, self.nbits // self.hash_bits)

    def _fit(self, X: np.ndarray) -> None:
        self._check_params()
        rng = np.random.default_rng(self.random_state)
        self.projection_ = _projection(rng, X.shape[1], self.nbits, self.projection)
        self.mean_ = X.mean(axis=0).astype(np.float32) if self.center else np.zeros(X.shape[1], np.float32)
        self.vectors_ = np.empty((0, X.shape[1]), np.float32)
        self.codes_ = np.empty((0, self.nbits // 8), np.uint8)
        self.labels_ = np.empty(0, np.int64)
        if self.mode == "ivf":
            self._fit_lists(X, int(rng.integers(2**31 - 1)))
        self._build_binary()

    def _fit_lists(self, X: np.ndarray, seed: int) -> None:
        """Spherical k-means centroids of the float vectors: the IVF mode's partition."""
        # √N lists, not the 4√N of VectorIndex: scanning 32-byte codes costs little next to the
        # re-rank, and k-means with 4x fewer centroids trains 4x faster (the cost of a 1M build).
        n = self.__dict__.get("expected_count_") or X.shape[0]
        nlist = int(self.nlist) if self.nlist is not None else fx.ivf_nlist(n, per_sqrt=1.0)
        fx.check_points(X.shape[0], nlist, "IVF lists", f"LSH mode 'ivf' with nlist={nlist}", stacklevel=6)
        km = faiss.Kmeans(X.shape[1], nlist, niter=10, spherical=True, seed=seed,
                          max_points_per_centroid=256)
        km.train(np.ascontiguousarray(X))
        self.centroids_ = km.centroids.astype(np.float32)
        self.lists_ = np.empty(0, np.int64)
        self.nprobe_ = int(self.nprobe) if self.nprobe is not None else fx.default_nprobe(nlist)

    def _assign(self, X: np.ndarray, nprobe: int) -> np.ndarray:
        """(n, nprobe) lists nearest each vector, by inner product with the centroids."""
        with fx.search_tuning(X.shape[0]):
            return self.coarse_.search(X, nprobe)[1]

    def hash(self, X: np.ndarray) -> np.ndarray:
        """Packed codes (n, nbits/8) uint8 of vectors already in the index space."""
        proj = (X - self.mean_) @ self.projection_
        return np.packbits(proj > 0, axis=1)

    def _build_binary(self) -> None:
        if self.mode == "flat":
            b = faiss.IndexBinaryFlat(self.nbits)
            # FAISS's default keeps a heap per query; for the rerank * top_k candidates needed
            # here its counting sort over the nbits + 1 possible distances is faster.
            b.use_heap = False
        elif self.mode == "multihash":
            b = faiss.IndexBinaryMultiHash(self.nbits, self._tables(), self.hash_bits)
            b.nflip = int(self.nflip)
        else:
            self.coarse_ = faiss.IndexFlatIP(self.centroids_.shape[1])
            self.coarse_.add(np.ascontiguousarray(self.centroids_))
            # The binary IVF's own quantizer stays empty: assignments come from coarse_.
            b = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(self.nbits), self.nbits, len(self.centroids_))
            b.is_trained = True
            b.nprobe = self.nprobe_
        if len(self.codes_):
            if self.mode == "ivf":
                _ivf_add(b, self.codes_, self.lists_)
            else:
                b.add(np.ascontiguousarray(self.codes_))
        self.binary_ = b

    # -- changes ----------------------------------------------------------------------
    def _add(self, X: np.ndarray, labels: np.ndarray) -> None:
        if self.metric == "ip":
            norms = np.linalg.norm(X, axis=1)
            bad = np.flatnonzero(np.abs(norms - 1) > 1e-3)
            if len(bad):
                raise InputError(
                    f"metric 'ip' with LSH needs unit-norm vectors; row {bad[0]} has norm {norms[bad[0]]:.4g} "
                    "(SimHash estimates angles, not inner products): use metric='cosine' or normalise"
                )
        codes = self.hash(X)
        if self.mode == "ivf":
            lists = self._assign(X, 1)[:, 0]
            _ivf_add(self.binary_, codes, lists)
            self.lists_ = np.concatenate([self.lists_, lists])
        else:
            self.binary_.add(codes)
        self.vectors_ = np.concatenate([self.vectors_, X])
        self.codes_ = np.concatenate([self.codes_, codes])
        self.labels_ = np.concatenate([self.labels_, labels])

    def _remove(self, labels: np.ndarray) -> None:
        keep = ~np.isin(self.labels_, labels)
        self.vectors_, self.codes_, self.labels_ = self.vectors_[keep], self.codes_[keep], self.labels_[keep]
        if self.mode == "ivf":
            self.lists_ = self.lists_[keep]
        self._build_binary()  # binary indexes number codes by position: rebuild

    # -- search -----------------------------------------------------------------------
    def _search(self, X: np.ndarray, k: int, rerank: int | None = None, nflip: int | None = None,
                nprobe: int | None = None):
        for name, value in (("rerank", rerank), ("nprobe", nprobe), ("nflip", nflip)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value < (0 if name == "nflip" else 1)):
                raise ParameterError(name, value, f"a {'non-negative' if name == 'nflip' else 'positive'} integer")
        n_cand = min(int(rerank or self.rerank) * k, self._ntotal())
        if nprobe is not None and self.mode != "ivf":
            raise InputError(f"nprobe applies to mode='ivf'; this LSH index has mode={self.mode!r}")
        if self.mode == "ivf":
            nprobe = min(int(nprobe or self.nprobe_), len(self.centroids_))
            pos = _ivf_search(self.binary_, self.hash(X), n_cand, self._assign(X, nprobe))
        else:
            if nflip is not None:
                if self.mode != "multihash":
                    raise InputError("nflip applies to mode='multihash'")
                saved, self.binary_.nflip = self.binary_.nflip, int(nflip)
            try:
                _, pos = self.binary_.search(self.hash(X), n_cand)
            finally:
                if nflip is not None:
                    self.binary_.nflip = saved
        scores = np.full((X.shape[0], k), -np.inf, np.float32)
        labels = np.full((X.shape[0], k), -1, np.int64)
        for s in range(0, X.shape[0], _CHUNK):
            p = pos[s : s + _CHUNK]
            valid = p >= 0
            cand = self.vectors_[np.where(valid, p, 0)]  # (chunk, n_cand, dim)
            exact = np.einsum("ckd,cd->ck", cand, X[s : s + _CHUNK])
            exact[~valid] = -np.inf
            top = np.argsort(-exact, axis=1, kind="stable")[:, :k] if n_cand <= 4 * k else _topk(exact, k)
            sc = np.take_along_axis(exact, top, 1)
            ok = np.isfinite(sc)
            scores[s : s + _CHUNK] = sc
            labels[s : s + _CHUNK] = np.where(ok, self.labels_[np.take_along_axis(np.where(valid, p, 0), top, 1)], -1)
        return scores, labels

    # -- persistence ------------------------------------------------------------------
    _ARRAYS = ("projection", "mean", "vectors", "codes", "labels")
    _IVF_ARRAYS = ("centroids", "lists")

    def _arrays(self) -> tuple:
        return self._ARRAYS + (self._IVF_ARRAYS if self.mode == "ivf" else ())

    def _save_payload(self, tmp: Path) -> dict:
        for name in self._arrays():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(self, name + "_")))
        ivf = {"nlist": len(self.centroids_), "nprobe": self.nprobe_} if self.mode == "ivf" else {}
        return {"factory": f"SimHash{self.nbits}+{self.mode}", "nbits": self.nbits, "mode": self.mode,
                "n_tables": self.n_tables, "hash_bits": self.hash_bits, "nflip": self.nflip,
                "rerank": self.rerank, "center": self.center, "projection": self.projection,
                "random_state": self.random_state, **ivf}

    @classmethod
    def _load(cls, path: Path, cfg: dict, mmap: bool = False) -> LSHIndex:
        where = path / "config.json"
        types = {"nbits": int, "mode": str, "n_tables": (int, type(None)), "hash_bits": int, "nflip": int,
                 "rerank": int, "center": bool, "random_state": (int, type(None))}
        params = {k: cfg_value(cfg, k, where, t) for k, t in types.items()}
        # indexes saved before the option existed used Gaussian projections (the matrix itself is stored)
        params["projection"] = cfg_value(cfg, "projection", where, str, optional=True, default="gaussian")
        params.update(nlist=cfg_value(cfg, "nlist", where, int, optional=True),
                      nprobe=cfg_value(cfg, "nprobe", where, int, optional=True))
        self = cls(**params, metric=cfg["metric"], transform=cfg.get("transform"), model=cfg.get("model"))
        try:
            self._check_params()
            if self.hash_bits < 1 or self.nflip < 0 or (self.n_tables is not None and self.n_tables < 1):
                raise InputError(f"hash_bits={self.hash_bits}, nflip={self.nflip}, n_tables={self.n_tables} out of range")
        except InputError as e:
            raise FormatError(f"{where}: {e}") from None
        for name in self._arrays():
            f = path / f"{name}.npy"
            arr = load_npy(f, mmap=mmap and name in ("vectors", "codes"))
            want = _DTYPES[name]
            if arr.dtype != want:
                raise FormatError(f"{f}: dtype {arr.dtype}, expected {np.dtype(want).name}")
            if want == np.float32 and arr.size and not np.isfinite(arr).all():
                raise FormatError(f"{f}: contains NaN or inf")
            setattr(self, name + "_", arr)
        n, d = (self.vectors_.shape[0] if self.vectors_.ndim else -1), cfg["dim"]
        if (self.vectors_.shape != (n, d) or self.codes_.shape != (n, self.nbits // 8)
                or self.labels_.shape != (n,) or n != cfg["count"] or self.projection_.shape != (d, self.nbits)
                or self.mean_.shape != (d,)):
            raise FormatError(f"{path}: array shapes disagree with config.json (count {cfg['count']}, dim {d}, nbits {self.nbits})")
        if self.mode == "ivf":
            if (self.nprobe is None or self.centroids_.shape != (self.nlist, d) or self.lists_.shape != (n,)
                    or (n and not 0 <= int(self.lists_.min()) <= int(self.lists_.max()) < self.nlist)):
                raise FormatError(f"{path}: centroids.npy / lists.npy disagree with config.json (nlist {self.nlist}, nprobe {self.nprobe}, count {n}, dim {d})")
            self.nprobe_ = int(self.nprobe)
        if len(np.unique(self.labels_)) != n:
            raise FormatError(f"{path / 'labels.npy'}: duplicate labels")
        self._load_common(path, cfg)
        self._check_labels(np.asarray(self.labels_), path / "labels.npy")
        self._build_binary()
        return self


def _ivf_add(b: faiss.IndexBinaryIVF, codes: np.ndarray, lists: np.ndarray) -> None:
    """Append codes to the given inverted lists (ids are positions, as in the other modes)."""
    # (named arrays: swig_ptr holds no reference, so a temporary would be freed before the call)
    codes = np.ascontiguousarray(codes)
    lists = np.ascontiguousarray(lists, dtype=np.int64)
    b.add_core(len(codes), faiss.swig_ptr(codes), None, faiss.swig_ptr(lists))


def _ivf_search(b: faiss.IndexBinaryIVF, codes: np.ndarray, k: int, assign: np.ndarray) -> np.ndarray:
    """Positions of the k nearest codes within each query's ``assign`` lists (-1 pads)."""
    n, nprobe = assign.shape
    codes = np.ascontiguousarray(codes)
    assign = np.ascontiguousarray(assign, dtype=np.int64)
    coarse_dist = np.zeros((n, nprobe), np.int32)  # unused by the scan, but read
    dist = np.empty((n, k), np.int32)
    pos = np.empty((n, k), np.int64)
    saved, b.nprobe = b.nprobe, nprobe
    try:
        with fx.search_tuning(n, blas=False):  # binary codes: no float distances
            b.search_preassigned_c(n, faiss.swig_ptr(codes), k, faiss.swig_ptr(assign), faiss.swig_ptr(coarse_dist),
                                   faiss.swig_ptr(dist), faiss.swig_ptr(pos), False)
    finally:
        b.nprobe = saved
    return pos


def _projection(rng: np.random.Generator, dim: int, nbits: int, kind: str) -> np.ndarray:
    """(dim, nbits) float32 hyperplane normals: Gaussian, or orthonormal in blocks of ``dim``."""
    if kind == "gaussian":
        return rng.standard_normal((dim, nbits)).astype(np.float32)
    blocks = []
    for start in range(0, nbits, dim):
        q, r = np.linalg.qr(rng.standard_normal((dim, min(dim, nbits - start))))
        blocks.append(q * np.sign(np.diag(r)))  # sign fix: a uniformly random orthonormal set
    return np.concatenate(blocks, axis=1).astype(np.float32)


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest scores per row, sorted descending."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)
