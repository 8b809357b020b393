"""Index benchmark: simkit's indexes against the same FAISS indexes used raw, and LSH peers.

Data: N float32 vectors of dimension D from a mixture of C Gaussians (centres on the unit
sphere, noise of the same norm as a centre), L2-normalised; queries from the same mixture.
Ground truth: exact inner-product search (faiss.IndexFlatIP). For each method it prints
build time, QPS for one batch of all queries and for single queries (median of --reps runs),
recall@10 and the bytes of the saved index, plus the QPS of the *same* FAISS object searched
directly (the overhead of simkit's ids/normalisation/result dicts is the ratio).

    python bench/index.py                    # the issue's size: 1M x 256, 1000 queries (long on 2 cores)
    python bench/index.py --n 100000         # ~3-4 minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from simkit.index import LSHIndex, VectorIndex


def make_data(n: int, nq: int, d: int, c: int, noise: float = 1.0, seed: int = 0, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((c, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    if offset:  # a shared direction: the narrow cone that real sentence embeddings live in
        shared = rng.standard_normal(d).astype(np.float32)
        centres += offset * shared / np.linalg.norm(shared)
    sigma = np.float32(noise / np.sqrt(d))  # noise norm ≈ `noise` x centre norm (1: in-cluster cosine ≈ 0.5)
    out = np.empty((n + nq, d), np.float32)
    for s in range(0, n + nq, 100_000):
        m = min(100_000, n + nq - s)
        out[s : s + m] = centres[rng.integers(0, c, m)] + sigma * rng.standard_normal((m, d), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out[:n], out[n:]


def timed(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def timed_pair(f, g, reps: int) -> tuple[float, float]:
    """Median seconds of ``f`` and of ``g``, called alternately (f, g, f, g, ...)."""
    tf, tg = [], []
    for _ in range(reps):
        for fn, out in ((f, tf), (g, tg)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(tf), statistics.median(tg)


def recall(labels: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / len(b) for a, b in zip(labels, truth)]))


def hits_to_labels(hits, k):
    out = np.full((len(hits), k), -1, np.int64)
    for i, row in enumerate(hits):
        out[i, : len(row)] = [h["id"] for h in row]
    return out


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def rerank(X, Q, cand, k):
    """Exact re-rank of candidate rows (the peer's, same method as simkit's)."""
    out = np.empty((len(Q), k), np.int64)
    for s in range(0, len(Q), 256):
        p = cand[s : s + 256]
        sc = np.einsum("ckd,cd->ck", X[np.maximum(p, 0)], Q[s : s + 256])
        sc[p < 0] = -np.inf
        top = np.argsort(-sc, axis=1)[:, :k]
        out[s : s + 256] = np.take_along_axis(p, top, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the cluster centres (higher: harder)")
    ap.add_argument("--offset", type=float, default=0.0,
                    help="norm of a direction shared by all centres (anisotropy; 2: mean cosine about 0.6, like BERT vectors)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    ap.add_argument("--lsh-bits", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--lsh-rerank", type=int, nargs="+", default=[5, 10, 20], help="candidates = rerank x k")
    ap.add_argument("--methods", default="flat,ivf,hnsw,ivfpq,lsh,lsh-ivf,lsh-multihash,faiss-lsh")
    args = ap.parse_args()
    k, methods = args.k, args.methods.split(",")
    t0 = time.perf_counter()
    X, Q = make_data(args.n, args.nq, args.dim, args.clusters, args.noise, offset=args.offset)
    gt = faiss.IndexFlatIP(args.dim)
    gt.add(X)
    truth = gt.search(Q, k)[1]
    print(f"# N={args.n} dim={args.dim} queries={args.nq} clusters={args.clusters} noise={args.noise} offset={args.offset} "
          f"mean cosine {float(np.mean(X[:1000] @ X[1000:2000].T)):.2f} k={k} "
          f"threads={faiss.omp_get_max_threads()} reps={args.reps} single={args.single} "
          f"(data + ground truth {time.perf_counter() - t0:.1f}s)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="simkit-bench-index-"))
    try:
        run_methods(args, methods, X, Q, truth, tmp, t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_methods(args, methods, X, Q, truth, tmp, t0) -> None:
    k = args.k
    ids = np.arange(args.n)
    rows = []

    def build(index) -> float:
        t = time.perf_counter()
        index.add(X, ids)
        return time.perf_counter() - t

    def measure(name, index, build, raw_search=None, kind=None, **params):
        labels = hits_to_labels(index.search(Q, top_k=k, **params), k)

        def batch():
            index.search(Q, top_k=k, **params)

        def single():
            for q in Q[: args.single]:
                index.search(q, top_k=k, **params)

        row = {"method": name, "kind": kind, "build_s": build, "recall": recall(labels, truth)}
        if raw_search is None:
            row["qps_batch"] = args.nq / timed(batch, args.reps)
            row["qps_single"] = args.single / timed(single, args.reps)
        else:  # simkit and raw FAISS alternate within each repetition, so drift hits both alike
            def raw_single():
                for q in Q[: args.single]:
                    raw_search(q[None])

            tb, rb = timed_pair(batch, lambda: raw_search(Q), args.reps)
            ts, rs = timed_pair(single, raw_single, args.reps)
            row.update(qps_batch=args.nq / tb, raw_qps_batch=args.nq / rb,
                       qps_single=args.single / ts, raw_qps_single=args.single / rs,
                       raw_recall=recall(raw_search(Q), truth))
        index.save(tmp / name)
        row["bytes"] = dir_bytes(tmp / name)
        shutil.rmtree(tmp / name)  # ~1 GB each at 1M: a sweep would fill the disk
        rows.append(row)
        print_row(row)

    def faiss_raw(index):
        """The same FAISS object, searched directly (labels == ids here)."""
        def search(q):
            return index.index_.search(q, k)[1]
        return search

    print(f"{'method':<24}{'build s':>9}{'QPS batch':>11}{'raw':>9}{'ratio':>7}{'QPS 1':>9}{'raw':>9}"
          f"{'ratio':>7}{'recall':>8}{'raw rec':>8}{'MB':>8}", flush=True)
    if "flat" in methods:
        idx = VectorIndex(preset="flat", metric="cosine")
        measure("Flat", idx, build(idx), faiss_raw(idx), kind="flat")
    for preset, knob in (("ivf", "nprobe"), ("hnsw", "efSearch"), ("ivfpq", "nprobe")):
        if preset in methods:
            idx = VectorIndex(preset=preset, metric="cosine")
            seconds = build(idx)
            obj = idx._ivf if knob == "nprobe" else idx._hnsw
            default = getattr(obj, knob)
            for value in sorted({max(1, default // 8), max(1, default // 4), max(1, default // 2), default}):
                setattr(obj, knob, value)
                measure(f"{idx.factory_} {knob}={value}", idx, seconds, faiss_raw(idx), kind=preset)
    lsh_rows = {}
    for nbits in args.lsh_bits:
        if "lsh-ivf" in methods:  # one build; nprobe and rerank are search-time knobs
            idx = LSHIndex(nbits=nbits, mode="ivf")
            seconds = build(idx)
            default = idx.nprobe_
            for nprobe in sorted({max(1, default // 4), max(1, default // 2), default}):
                for r in args.lsh_rerank:
                    name = f"simkit LSH{nbits} ivf{len(idx.centroids_)} p{nprobe} r{r}"
                    measure(name, idx, seconds, rerank=r, nprobe=nprobe)
                    lsh_rows[name] = ("simkit ivf", rows[-1])
        for r in args.lsh_rerank:
            if "lsh" in methods:
                idx = LSHIndex(nbits=nbits, rerank=r)
                name = f"simkit LSH{nbits} r{r}"
                measure(name, idx, build(idx))
                lsh_rows[name] = ("simkit flat", rows[-1])
            if "faiss-lsh" in methods:
                t = time.perf_counter()
                lsh = faiss.IndexLSH(args.dim, nbits, True)  # rotate_data: random rotation, then sign
                lsh.train(X)
                lsh.add(X)
                seconds = time.perf_counter() - t

                def peer(q, lsh=lsh, r=r):
                    return rerank(X, q, lsh.search(q, r * k)[1], k)

                labels = peer(Q)
                qb = args.nq / timed(lambda: peer(Q), args.reps)
                qs = args.single / timed(lambda: [peer(q[None]) for q in Q[: args.single]], args.reps)
                name = f"faiss IndexLSH{nbits} r{r}"
                row = {"method": name, "build_s": seconds, "qps_batch": qb, "qps_single": qs,
                       "recall": recall(labels, truth), "bytes": len(faiss.serialize_index(lsh)) + X.nbytes}
                rows.append(row)
                lsh_rows[name] = ("faiss", row)
                print_row(row)
    if "lsh-multihash" in methods:
        idx = LSHIndex(nbits=256, mode="multihash", hash_bits=16, nflip=1, rerank=10)
        measure("simkit LSH256 mhash r10", idx, build(idx))
    summarise_ann(rows, X, Q)
    # the issue's comparison: the fastest configuration of each that reaches a recall level
    # (batch and single queries each pick their own fastest configuration)
    for level in (0.90, 0.95):
        for mode in ("simkit flat", "simkit ivf"):
            line = []
            for key, label in (("qps_batch", "batch"), ("qps_single", "single")):
                best = {}
                for who, row in lsh_rows.values():
                    if row["recall"] >= level and row[key] > best.get(who, {key: 0})[key]:
                        best[who] = row
                if mode not in best or "faiss" not in best:
                    line.append(f"{label}: reached by {sorted(best) or 'neither'}")
                    continue
                s, f = best[mode], best["faiss"]
                line.append(f"{label} {s['method']} {s[key]:.0f} QPS (recall {s['recall']:.3f}) vs {f['method']} "
                            f"{f[key]:.0f} (recall {f['recall']:.3f}): {s[key] / f[key]:.2f}x")
            if any(mode == w for w, _ in lsh_rows.values()):
                print(f"# LSH + re-rank at recall >= {level:.2f}, {mode} vs FAISS IndexLSH: " + "; ".join(line), flush=True)
    print(f"# total {time.perf_counter() - t0:.1f}s", flush=True)


def summarise_ann(rows: list, X: np.ndarray, Q: np.ndarray) -> None:
    """The issue's goals for IVF / HNSW against exact search, and exact search against memory bandwidth."""
    flat = next((r for r in rows if r.get("kind") == "flat"), None)
    if flat is None:
        return
    ann = [r for r in rows if r.get("kind") in ("ivf", "hnsw") and r["recall"] >= 0.95]
    for key, label in (("qps_batch", "batch"), ("qps_single", "single")):
        if ann:
            best = max(ann, key=lambda r: r[key])
            print(f"# fastest IVF/HNSW at recall >= 0.95 ({label}): {best['method']} {best[key]:.0f} QPS, "
                  f"recall {best['recall']:.3f}: {best[key] / flat[key]:.1f}x exact Flat ({flat[key]:.1f} QPS)", flush=True)
        else:
            print(f"# no IVF/HNSW configuration reached recall 0.95 ({label})", flush=True)
    # Bandwidth bound of one exact query: every vector byte is read once. The read speed is
    # that of a vectorised numpy reduction over the same array, on the same threads.
    flat_x = X.reshape(-1)
    read_s = timed(lambda: flat_x.max(), 3)
    bound_ms = 1e3 * read_s
    got_ms = 1e3 / flat["qps_single"]
    print(f"# exact single query: {got_ms:.1f} ms; reading the {X.nbytes / 2**30:.2f} GiB of vectors takes "
          f"{bound_ms:.1f} ms ({X.nbytes / read_s / 2**30:.1f} GiB/s): {got_ms / bound_ms:.2f}x the bandwidth bound; "
          f"numpy X @ q: {1e3 * timed(lambda: X @ Q[0], 3):.1f} ms", flush=True)


def print_row(r: dict) -> None:
    def f(key, fmt):
        return format(r[key], fmt) if key in r else "-"

    rb = f"{r['qps_batch'] / r['raw_qps_batch']:.2f}" if "raw_qps_batch" in r else "-"
    rs = f"{r['qps_single'] / r['raw_qps_single']:.2f}" if "raw_qps_single" in r else "-"
    print(f"{r['method']:<24}{r['build_s']:>9.2f}{r['qps_batch']:>11.0f}{f('raw_qps_batch', '.0f'):>9}{rb:>7}"
          f"{r['qps_single']:>9.0f}{f('raw_qps_single', '.0f'):>9}{rs:>7}{r['recall']:>8.3f}"
          f"{f('raw_recall', '.3f'):>8}{r['bytes'] / 2**20:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
