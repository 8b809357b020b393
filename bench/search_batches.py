"""Flat search in small batches: simkit's ``VectorIndex.search`` against ``faiss.IndexFlatIP``.

Small batches of queries are what a service's dynamic batcher hands the index (8 to 64 at a
time). The peer is what a user writes: ``faiss.IndexFlatIP`` searched directly, with FAISS's
own choice between its per-query SIMD scan and BLAS. simkit switches to BLAS from
``simkit.index.factory.BLAS_MIN_QUERIES`` queries on. Same vectors (the mixture of
``bench/index.py``), same queries, same k; the two are timed alternately and the table shows
medians, the ratio and whether both returned the same neighbours.

    python bench/search_batches.py                      # 20k x 192 (the bundled model's dim)
    python bench/search_batches.py --n 100000 --dim 768

One run of the first line, 2026-11-28, Intel Xeon, 2 logical CPUs, quiet machine, FAISS 1.15.1
(BLAS threshold 128,000 = queries x dim), 2 OpenMP threads, medians of 15 alternating runs:

| queries | faiss.IndexFlatIP ms | simkit ms | simkit vs faiss | same neighbours |
|---:|---:|---:|---:|---|
| 1 | 0.77 | 0.65 | 1.19x | yes |
| 2 | 0.56 | 1.20 | 0.47x | yes |
| 4 | 1.04 | 2.37 | 0.44x | yes |
| 8 | 2.05 | 3.39 | 0.60x | yes |
| 16 | 4.10 | 5.87 | 0.70x | yes |
| 32 | 7.35 | 5.55 | 1.32x | yes |
| 64 | 16.39 | 10.11 | 1.62x | yes |
| 128 | 32.96 | 18.64 | 1.77x | yes |

From 32 queries on, BLAS makes simkit 1.3-1.8x the plain FAISS search. From 2 to 16 queries
simkit is slower on a quiet machine: below 20 queries it searches with one OpenMP thread
(``search_tuning``), the setting that holds up when the cores are shared. With a 2-thread
torch matmul loop running beside it (same machine, a scratch run of the same searches),
2-thread FAISS took 8-18 ms at 4-16 queries by its SIMD scan and 320-460 ms at 20-64 queries
by BLAS, against 2-5 ms with one thread and BLAS.
"""

from __future__ import annotations

import argparse
import os

import faiss
import numpy as np
from _machine import cpu_model  # bench/ is on sys.path when a bench runs
from index import make_data, timed_pair

from simkit.index import VectorIndex
from simkit.index.factory import BLAS_MIN_QUERIES


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    ap.add_argument("--reps", type=int, default=15, help="Alternating runs per cell (median shown).")
    ap.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads of both.")
    args = ap.parse_args(argv)

    faiss.omp_set_num_threads(args.threads)
    X, Q = make_data(args.n, max(args.batches), args.dim, c=100)
    peer = faiss.IndexFlatIP(args.dim)
    peer.add(X)
    ours = VectorIndex(preset="flat").add(X, list(range(args.n)))
    default = faiss.cvar.distance_compute_blas_threshold

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; FAISS {faiss.__version__}, "
          f"{args.threads} OpenMP threads; {args.n} x {args.dim} flat inner product, k={args.k}; "
          f"FAISS's BLAS threshold {default}; simkit uses BLAS from {BLAS_MIN_QUERIES} queries; "
          f"median of {args.reps} alternating runs\n")
    print("| queries | faiss.IndexFlatIP ms | simkit ms | simkit vs faiss | same neighbours |")
    print("|---:|---:|---:|---:|---|")
    for nq in args.batches:
        q = np.ascontiguousarray(Q[:nq])
        t_peer, t_ours = timed_pair(lambda q=q: peer.search(q, args.k), lambda q=q: ours.search(q, top_k=args.k),
                                    args.reps)
        assert faiss.cvar.distance_compute_blas_threshold == default  # simkit restored it
        want = peer.search(q, args.k)[1]
        got = np.array([[h["id"] for h in row] for row in ours.search(q, top_k=args.k)])
        print(f"| {nq} | {1000 * t_peer:.2f} | {1000 * t_ours:.2f} | {t_peer / t_ours:.2f}x | "
              f"{'yes' if np.array_equal(want, got) else 'no'} |")


if __name__ == "__main__":
    main()
