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

>>> idx = LSHIndex(nbits=256, mode="flat", rerank=10).add(X, ids)   # X: (n, 256) float32
>>> idx.search(X[:2], top_k=5)                                        # 2 lists of 5 hits
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from ..errors import FormatError, InputError, check_choice
from .base import BaseIndex

MODES = ("flat", "multihash")
PROJECTIONS = ("orthogonal", "gaussian")
_CHUNK = 256  # queries re-ranked at a time: bounds the (chunk, candidates, dim) gather


class LSHIndex(BaseIndex):
    """SimHash codes + FAISS binary index + exact re-rank of candidates.

    ``metric`` is ``cosine`` (vectors normalised internally) or ``ip`` (only for vectors that
    are already unit-norm: on other vectors the angle that SimHash estimates says nothing
    about the inner product, so that is refused). ``center`` subtracts the mean of the first
    batch before hashing, which spreads codes of anisotropic embeddings over more buckets.
    """

    kind = "lsh"

    def __init__(self, nbits: int = 256, *, metric: Literal["cosine", "ip"] = "cosine",
                 mode: Literal["flat", "multihash"] = "flat", n_tables: int | None = None,
                 hash_bits: int = 16, nflip: int = 1, rerank: int = 10, center: bool = True,
                 projection: Literal["orthogonal", "gaussian"] = "orthogonal",
                 random_state: int | None = 0, transform: Any = None, model: Any = None):
        self.nbits = nbits
        self.metric = metric
        self.mode = mode
        self.n_tables = n_tables
        self.hash_bits = hash_bits
        self.nflip = nflip
        self.rerank = rerank
        self.center = center
        self.projection = projection
        self.random_state = random_state
        self.transform = transform
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
        if not isinstance(self.nbits, (int, np.integer)) or self.nbits < 8 or self.nbits % 8:
            raise InputError(f"nbits={self.nbits!r}; expected a positive multiple of 8 (codes are packed to bytes)")
        if self.rerank < 1:
            raise InputError(f"rerank={self.rerank}; expected >= 1 (candidates = rerank * top_k)")
        if self.mode == "multihash" and self._tables() * self.hash_bits > self.nbits:
            raise InputError(f"n_tables * hash_bits = {self._tables()} * {self.hash_bits} exceeds nbits={self.nbits}")

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
        self._build_binary()

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
        else:
            b = faiss.IndexBinaryMultiHash(self.nbits, self._tables(), self.hash_bits)
            b.nflip = int(self.nflip)
        if len(self.codes_):
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
        self.binary_.add(codes)
        self.vectors_ = np.concatenate([self.vectors_, X])
        self.codes_ = np.concatenate([self.codes_, codes])
        self.labels_ = np.concatenate([self.labels_, labels])

    def _remove(self, labels: np.ndarray) -> None:
        keep = ~np.isin(self.labels_, labels)
        self.vectors_, self.codes_, self.labels_ = self.vectors_[keep], self.codes_[keep], self.labels_[keep]
        self._build_binary()  # binary indexes number codes by position: rebuild

    # -- search -----------------------------------------------------------------------
    def _search(self, X: np.ndarray, k: int, rerank: int | None = None, nflip: int | None = None):
        n_cand = min(int(rerank or self.rerank) * k, self._ntotal())
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

    def _save_payload(self, tmp: Path) -> dict:
        for name in self._ARRAYS:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(self, name + "_")))
        return {"factory": f"SimHash{self.nbits}+{self.mode}", "nbits": self.nbits, "mode": self.mode,
                "n_tables": self.n_tables, "hash_bits": self.hash_bits, "nflip": self.nflip,
                "rerank": self.rerank, "center": self.center, "projection": self.projection,
                "random_state": self.random_state}

    @classmethod
    def _load(cls, path: Path, cfg: dict, mmap: bool = False) -> LSHIndex:
        params = {k: cfg[k] for k in ("nbits", "mode", "n_tables", "hash_bits", "nflip", "rerank",
                                      "center", "random_state")}
        # indexes saved before the option existed used Gaussian projections (the matrix itself is stored)
        params["projection"] = cfg.get("projection", "gaussian")
        self = cls(**params, metric=cfg["metric"], transform=cfg.get("transform"), model=cfg.get("model"))
        self._check_params()
        for name in self._ARRAYS:
            f = path / f"{name}.npy"
            try:
                arr = np.load(f, mmap_mode="r" if mmap and name in ("vectors", "codes") else None, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise FormatError(f"{f}: not a readable .npy file (truncated or missing?): {e}") from None
            setattr(self, name + "_", arr)
        n, d = self.vectors_.shape[0], cfg["dim"]
        if (self.vectors_.shape != (n, d) or self.codes_.shape != (n, self.nbits // 8)
                or self.labels_.shape != (n,) or n != cfg["count"] or self.projection_.shape != (d, self.nbits)):
            raise FormatError(f"{path}: array shapes disagree with config.json (count {cfg['count']}, dim {d}, nbits {self.nbits})")
        self._load_common(path, cfg)
        self._build_binary()
        return self


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
