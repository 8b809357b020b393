"""FAISS factory strings: presets, IDMap wrapping, training-size checks, search knobs.

>>> resolve_preset("ivf", n=1_000_000, dim=256)
'IVF4000,Flat'
>>> resolve_preset("ivfpq", n=100_000, dim=256)
'IVF1264,PQ32x8'
"""

from __future__ import annotations

import math
import threading
import warnings

import faiss
import numpy as np

from ..errors import InputError, check_choice

PRESETS = ("flat", "ivf", "hnsw", "ivfpq")
METRICS = ("cosine", "ip", "l2")
MIN_POINTS_PER_CENTROID = 39  # FAISS's own advice (it warns below this)
# Defaults a preset sets at build time (the user's nprobe / efSearch override them per search).
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128


def ivf_nlist(n: int, per_sqrt: float = 4.0) -> int:
    """The √N rule, nlist ≈ 4√N, capped so every list gets >= 39 training points."""
    return max(1, min(int(per_sqrt * math.sqrt(n)), n // MIN_POINTS_PER_CENTROID))


def default_nprobe(nlist: int) -> int:
    """About 3% of the lists, at least 8 (small indexes): see bench/index.py for recall."""
    return min(nlist, max(8, round(nlist * 0.03)))


def resolve_preset(preset: str, n: int, dim: int) -> str:
    """The factory string of a preset for ``n`` training vectors of dimension ``dim``."""
    check_choice("preset", preset, PRESETS)
    if preset == "flat":
        return "Flat"
    if preset == "hnsw":
        return f"HNSW{HNSW_M}"
    nlist = ivf_nlist(n)
    if preset == "ivf":
        return f"IVF{nlist},Flat"
    # PQ: 8 dims per sub-quantizer (32x smaller than float32). 4-dim sub-quantizers recall
    # more but FAISS trains them ~17x slower (45 s vs 2.6 s on 20k x 256, measured here).
    # 8-bit codebooks need 256 training points each; small corpora get 4-bit ones.
    m = next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m >= 1 and dim % m == 0)
    nbits = 8 if n >= 256 * MIN_POINTS_PER_CENTROID else 4
    return f"IVF{nlist},PQ{m}x{nbits}"


# From this many queries on, inner-product distances go through BLAS (one matrix product per
# block) rather than FAISS's per-query SIMD scan. FAISS 1.15 switches only when queries x dim
# reach 128,000 (667 queries at dim 192), a threshold tuned for many cores; on a few cores
# BLAS is ahead from about 8 queries (bench/search_batches.py isolates it).
BLAS_MIN_QUERIES = 8

# FAISS's BLAS threshold is one process-wide variable: the first search that wants BLAS saves
# it, the last one to finish puts it back, whatever the order in which threads leave.
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = 0


class search_tuning:
    """FAISS settings for one search of ``nq`` queries, restored afterwards.

    - Fewer than 20 queries: one OpenMP thread for the calling thread's FAISS calls. FAISS's
      flat, IVF and HNSW searches then parallelise over queries only, so more threads cannot
      help, but the fork/join of every call costs a lot when the cores are shared (measured
      here under load: 170 -> 1100 single queries/s on 20k x 256 flat).
    - ``blas`` and ``BLAS_MIN_QUERIES`` or more: flat inner-product distances (flat indexes,
      IVF coarse quantizers) by BLAS, whatever the FAISS version's threshold. Only for inner
      products: BLAS computes L2 as |x|^2 + |y|^2 - 2 x.y, which loses the small distances
      of near duplicates, and the scores of a query would then depend on how many others
      share its search call. The switch is process-wide while any such search runs; inner
      products by either path differ only by float rounding.

    A class, not a generator: it runs on every single-query search, where a
    ``contextlib.contextmanager`` costs ~1 us more.
    """

    __slots__ = ("nq", "threads", "blas")

    def __init__(self, nq: int, blas: bool = True):
        self.nq = nq
        self.threads = 0
        self.blas = blas and nq >= BLAS_MIN_QUERIES

    def __enter__(self) -> None:
        global _blas_users, _blas_saved
        if self.nq < 20:
            self.threads = faiss.omp_get_max_threads()
            if self.threads > 1:
                faiss.omp_set_num_threads(1)
        if self.blas:
            with _blas_lock:
                if _blas_users == 0:
                    _blas_saved = faiss.cvar.distance_compute_blas_threshold
                    faiss.cvar.distance_compute_blas_threshold = 0
                _blas_users += 1

    def __exit__(self, *exc) -> None:
        global _blas_users
        if self.threads > 1:
            faiss.omp_set_num_threads(self.threads)
        if self.blas:
            with _blas_lock:
                _blas_users -= 1
                if _blas_users == 0:
                    faiss.cvar.distance_compute_blas_threshold = _blas_saved


def faiss_metric(metric: str) -> int:
    check_choice("metric", metric, METRICS)
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def make_index(factory: str, dim: int, metric: str) -> faiss.Index:
    """``faiss.index_factory`` plus an ``IDMap2`` where the index cannot take ids itself."""
    try:
        index = faiss.index_factory(dim, factory, faiss_metric(metric))
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1]
        raise InputError(f"invalid FAISS factory string {factory!r} for dim {dim}: {msg}") from None
    if not factory.replace(" ", "").startswith("IDMap") and faiss.try_extract_index_ivf(index) is None:
        # Flat, HNSW, PQ, LSH... number vectors by position; IDMap2 maps our labels (and
        # keeps reconstruct-by-id working).
        index = faiss.IndexIDMap2(index)
    hnsw = find_hnsw(index)
    if hnsw is not None:
        hnsw.efConstruction = max(hnsw.efConstruction, HNSW_EF_CONSTRUCTION)
        hnsw.efSearch = max(hnsw.efSearch, HNSW_EF_SEARCH)
    return index


def _unwrap(index: faiss.Index) -> list:
    """The chain of nested indexes (IDMap -> PreTransform -> IVF ...), outermost first."""
    chain, cur = [], faiss.downcast_index(index)
    while cur is not None:
        chain.append(cur)
        inner = getattr(cur, "index", None)
        cur = faiss.downcast_index(inner) if isinstance(inner, faiss.Index) else None
    return chain


def find_hnsw(index: faiss.Index):
    """The ``faiss.HNSW`` graph inside ``index`` (for efSearch), or None."""
    for sub in _unwrap(index):
        if isinstance(sub, faiss.IndexHNSW):
            return sub.hnsw
    return None


def find_ivf(index: faiss.Index):
    return faiss.try_extract_index_ivf(index)


def index_labels(index: faiss.Index):
    """The int64 labels stored in ``index`` (IDMap or IVF lists), or None if it keeps none."""
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    ivf = find_ivf(index)
    if ivf is None:
        return None
    inv = ivf.invlists
    parts = [faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy()
             for i in range(ivf.nlist) if inv.list_size(i)]
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.empty(0, np.int64)


def supports_remove(index: faiss.Index) -> bool:
    return find_hnsw(index) is None


def check_training(index: faiss.Index, n: int, factory: str) -> None:
    """Error with fewer training points than centroids; warning below 39 per centroid."""
    needs = []
    ivf = find_ivf(index)
    if ivf is not None:
        needs.append(("IVF lists", ivf.nlist))
    for sub in _unwrap(index) + ([faiss.downcast_index(ivf)] if ivf is not None else []):
        pq = getattr(sub, "pq", None)
        if pq is not None:
            needs.append(("PQ centroids per sub-quantizer", pq.ksub))
    for what, k in needs:
        check_points(n, k, what, repr(factory), stacklevel=6)  # the caller of add()


def check_points(n: int, k: int, what: str, label: str, stacklevel: int = 4) -> None:
    """Error with fewer training points than ``k`` centroids; warning below 39 per centroid."""
    if n < k:
        raise InputError(
            f"{label} needs at least {k} training vectors ({what}); got {n}. "
            f"Add more vectors, or use fewer lists (preset 'flat' or a smaller IVF)"
        )
    if k > 1 and n < MIN_POINTS_PER_CENTROID * k:  # (one "centroid" is just the mean)
        warnings.warn(
            f"{label}: {n} training vectors for {k} {what} is below FAISS's recommended "
            f"{MIN_POINTS_PER_CENTROID} per centroid ({MIN_POINTS_PER_CENTROID * k}); "
            "clustering quality (and recall) may suffer",
            stacklevel=stacklevel,
        )
