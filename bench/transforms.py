"""Benchmark: simkit Whitening vs scikit-learn PCA(whiten) and the published numpy formula.

    python bench/transforms.py            # issue sizes: fit 100k x 768 -> 256, stream 1M x 768
    python bench/transforms.py --quick    # 20k x 768, stream 200k (well under a minute)

Measures, in one run on the same data: fit time (median of --runs), transform throughput
against ``(X - mu) @ W`` in numpy, the accuracy of each output against the published formula
computed in float64, and ``partial_fit`` over rows generated chunk by chunk (never
materialised) with the peak extra memory seen by tracemalloc (numpy's allocations are traced).
The full sizes take about 3-6 minutes on 2 busy cores; --quick well under one.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from sklearn.decomposition import PCA

from simkit.transforms import Whitening


def timed(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def make_data(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Correlated, off-centre float32 rows, like sentence embeddings (a common mean vector)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d)) * np.exp(-np.arange(d) / 200) / np.sqrt(d)
    X = rng.standard_normal((n, d), dtype=np.float32) @ A.astype(np.float32)
    X += rng.standard_normal(d).astype(np.float32)
    assert X.dtype == np.float32
    return X


def published_fit(X: np.ndarray, k: int):
    """The published BERT-whitening code in numpy: np.cov + svd."""
    mu = X.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(np.cov(X.T))
    return mu, (u / np.sqrt(s))[:, :k]


def max_err(Y: np.ndarray, ref: np.ndarray) -> float:
    Y = Y * np.sign((Y * ref).sum(axis=0))  # eigenvector signs are arbitrary
    return float(np.abs(Y - ref).max())


def bench_fit_transform(n: int, d: int, k: int, runs: int) -> list[tuple]:
    X = make_data(n, d)
    rows = []
    t_sim, w = timed(lambda: Whitening(k).fit(X), runs)
    t_skl, pca = timed(lambda: PCA(k, whiten=True, svd_solver="covariance_eigh").fit(X), runs)
    t_pub, (mu, W) = timed(lambda: published_fit(X, k), runs)
    # Reference output: the published formula entirely in float64, on the first 2000 rows.
    mu64, W64 = published_fit(X.astype(np.float64), k)
    ref = (X[:2000].astype(np.float64) - mu64) @ W64
    rows.append(("fit", "simkit Whitening(k).fit", t_sim, t_skl / t_sim,
                 max_err(w.transform(X[:2000]), ref)))
    rows.append(("fit", "sklearn PCA(whiten, covariance_eigh)", t_skl, 1.0,
                 max_err(pca.transform(X[:2000]), ref)))
    rows.append(("fit", "published numpy (np.cov + svd)", t_pub, t_skl / t_pub,
                 max_err((X[:2000] - mu) @ W, ref)))
    W32, mu32 = w.kernel_, w.mean_
    t_tr, _ = timed(lambda: w.transform(X), runs)
    t_np, _ = timed(lambda: (X - mu32) @ W32, runs)
    t_sk, _ = timed(lambda: pca.transform(X), runs)
    rows.append(("transform", "simkit: X @ kernel_ + bias_ (+ NaN check)", t_tr, t_np / t_tr,
                 max_err(w.transform(X[:2000]), ref)))
    rows.append(("transform", "numpy (X - mu) @ W", t_np, 1.0,
                 max_err((X[:2000] - mu32) @ W32, ref)))
    rows.append(("transform", "sklearn PCA.transform", t_sk, t_np / t_sk,
                 max_err(pca.transform(X[:2000]), ref)))
    return rows


def chunks(n: int, d: int, chunk: int, seed: int = 1):
    """Rows generated on the fly: one chunk exists at a time."""
    rng = np.random.default_rng(seed)
    scale = np.exp(-np.arange(d) / 200).astype(np.float32)
    offset = rng.standard_normal(d).astype(np.float32)
    for start in range(0, n, chunk):
        z = rng.standard_normal((min(chunk, n - start), d), dtype=np.float32)
        z *= scale
        z += offset
        yield z


def stream(n: int, d: int, k: int, chunk: int, fit) -> tuple[float, float, float]:
    """Seconds in fit(), peak extra MB inside fit() calls, peak MB of the whole loop."""
    tracemalloc.start()
    fit_s, extra = 0.0, 0
    for z in chunks(n, d, chunk):
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        fit(z)
        fit_s += time.perf_counter() - t0
        extra = max(extra, tracemalloc.get_traced_memory()[1] - before)
    loop_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return fit_s, extra / 2**20, loop_peak / 2**20


def bench_stream(n: int, d: int, k: int, chunk: int) -> list[tuple]:
    w = Whitening(k)

    def simkit_fit(z):
        w.partial_fit(z)

    state = {"n": 0, "s": np.zeros(d), "g": np.zeros((d, d))}

    def numpy_fit(z):  # the plain streaming peer: float64 sums of x and x xᵀ per chunk
        z64 = z.astype(np.float64)
        state["n"] += len(z)
        state["s"] += z64.sum(axis=0)
        state["g"] += z64.T @ z64

    rows = []
    for name, fit in (("simkit partial_fit (float64 Chan, syrk)", simkit_fit),
                      ("numpy float64 chunk Gram sums", numpy_fit)):
        fit_s, extra, peak = stream(n, d, k, chunk, fit)
        if fit is simkit_fit:
            t0 = time.perf_counter()
            w._solve()
            fit_s += time.perf_counter() - t0  # the one eigh at the end
        rows.append((name, fit_s, n / fit_s, extra, peak))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20k rows to fit, 200k to stream")
    p.add_argument("--n", type=int, default=None, help="rows to fit (default 100000)")
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--stream-n", type=int, default=None, help="rows to stream (default 1M)")
    p.add_argument("--chunk", type=int, default=8192, help="rows per generated chunk")
    p.add_argument("--runs", type=int, default=None, help="runs per median (default 5 / 3)")
    a = p.parse_args()
    n = a.n or (20_000 if a.quick else 100_000)
    sn = a.stream_n or (200_000 if a.quick else 1_000_000)
    runs = a.runs or (5 if a.quick else 3)
    import threadpoolctl

    print(f"# n={n} d={a.d} k={a.k} runs={runs} (median); stream {sn} rows in chunks of "
          f"{a.chunk}; BLAS {threadpoolctl.threadpool_info()[0].get('internal_api')} "
          f"threads={threadpoolctl.threadpool_info()[0].get('num_threads')}")
    print(f"\n{'stage':<10} {'method':<42} {'median s':>9} {'speed-up':>9} {'max |err|':>10}")
    for stage, name, t, ratio, err in bench_fit_transform(n, a.d, a.k, runs):
        print(f"{stage:<10} {name:<42} {t:>9.3f} {ratio:>8.2f}x {err:>10.2e}")
    print("  (speed-up: fit vs sklearn, transform vs numpy; err vs the float64 published formula)")
    print(f"\n{'streaming':<42} {'fit s':>8} {'rows/s':>10} {'extra MB':>9} {'loop MB':>8}")
    for name, t, rps, extra, peak in bench_stream(sn, a.d, a.k, a.chunk):
        print(f"{name:<42} {t:>8.2f} {rps:>10.0f} {extra:>9.1f} {peak:>8.1f}")
    print("  (extra MB: peak allocated inside the fit call beyond what existed before it;"
          "\n   loop MB: peak of the whole loop, including the generated chunk and the state)")


if __name__ == "__main__":
    main()
