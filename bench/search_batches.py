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
(BLAS threshold 128,000 = queries x dim), 2 OpenMP threads, medians of 15 alternating runs;
"simkit, FAISS's threshold" is simkit with the BLAS switch turned off (its thread rule kept),
so "BLAS switch alone" is the switch's own effect:

| queries | faiss.IndexFlatIP ms | simkit, FAISS's threshold ms | simkit ms | simkit vs faiss | BLAS switch alone | same neighbours |
|---:|---:|---:|---:|---:|---:|---|
| 1 | 0.76 | 0.59 | 0.61 | 1.25x | 0.96x | yes |
| 2 | 0.41 | 1.14 | 1.13 | 0.36x | 1.00x | yes |
| 4 | 0.81 | 2.23 | 2.24 | 0.36x | 1.00x | yes |
| 8 | 1.54 | 4.39 | 3.15 | 0.49x | 1.39x | yes |
| 16 | 3.08 | 8.81 | 5.26 | 0.59x | 1.68x | yes |
| 32 | 5.97 | 7.82 | 5.08 | 1.18x | 1.54x | yes |
| 64 | 12.48 | 16.33 | 9.74 | 1.28x | 1.68x | yes |
| 128 | 24.47 | 31.01 | 18.63 | 1.31x | 1.66x | yes |

The switch makes simkit's search 1.4-1.7x faster from 8 queries on, and 1.2-1.3x the plain
FAISS search from 32. From 2 to 16 queries simkit is slower than plain FAISS on a quiet
machine: below 20 queries it searches with one OpenMP thread (``search_tuning``), the
setting that holds up when the cores are shared. With a 2-thread torch matmul loop running
beside it (same machine, a scratch run of the same searches), 2-thread FAISS took 8-18 ms at
4-16 queries by its SIMD scan and 320-460 ms at 20-64 queries by BLAS, against 2-5 ms with
one thread and BLAS. L2 indexes keep FAISS's own switch: BLAS computes |x|^2 + |y|^2 - 2 x.y,
which loses the small distances of near duplicates.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import faiss
import numpy as np
from _machine import cpu_model  # bench/ is on sys.path when a bench runs
from index import make_data

import simkit.index.factory as factory
from simkit.index import VectorIndex
from simkit.index.factory import BLAS_MIN_QUERIES


def timed_alternately(fns, reps: int) -> list[float]:
    """Median seconds of each of ``fns``, called in turn (f, g, h, f, g, h, ...)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, out in zip(fns, times):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128])
    ap.add_argument("--reps", type=int, default=15, help="Alternating runs per cell (median shown).")
    ap.add_argument("--threads", type=int, default=2,
                    help="FAISS OpenMP threads (simkit uses one below 20 queries).")
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
    print("| queries | faiss.IndexFlatIP ms | simkit, FAISS's threshold ms | simkit ms | simkit vs faiss | "
          "BLAS switch alone | same neighbours |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for nq in args.batches:
        q = np.ascontiguousarray(Q[:nq])
        def scan(q=q):  # simkit as it was: the same threads, FAISS's own switch to BLAS
            factory.BLAS_MIN_QUERIES = 10**9
            try:
                return ours.search(q, top_k=args.k)
            finally:
                factory.BLAS_MIN_QUERIES = BLAS_MIN_QUERIES

        t_peer, t_ours, t_scan = timed_alternately(
            [lambda q=q: peer.search(q, args.k), lambda q=q: ours.search(q, top_k=args.k), scan], args.reps)
        assert faiss.cvar.distance_compute_blas_threshold == default  # simkit restored it
        want = peer.search(q, args.k)[1]
        got = np.array([[h["id"] for h in row] for row in ours.search(q, top_k=args.k)])
        print(f"| {nq} | {1000 * t_peer:.2f} | {1000 * t_scan:.2f} | {1000 * t_ours:.2f} | {t_peer / t_ours:.2f}x | "
              f"{t_scan / t_ours:.2f}x | {'yes' if np.array_equal(want, got) else 'no'} |")


if __name__ == "__main__":
    main()
