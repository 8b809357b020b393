"""Past one machine: the ray engine against the local engine, and index build memory.

1. Throughput on the same sentences (the first ``--n`` lines of the ``sentences/*.txt`` files
   of ``--data-dir``, written to a temporary directory, never into the repo), bundled model:
   the local engine with 1 and with 2 torch threads, the ray engine with 1 and 2 workers of
   one CPU each (equal cores: 1 thread vs 1 worker, 2 threads vs 2 workers). Ray is started
   once, before the timings (a cluster is already running); each ray figure includes its
   actors' start (loading torch and the model), reported apart as ``startup``. The steady
   rate per worker comes from the shards' own encode times.
2. Memory of ``index build`` from a sharded store ``--store-factor`` times larger than
   ``--budget-mb`` (random unit vectors, 256-d): peak RSS of a subprocess, streaming
   (sample + chunked add) against loading the matrix whole (the pre-shard path).

    python bench/scale.py --data-dir ../shared/data/chinese-pairs --n 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import cpu_model  # bench/ is on sys.path when a bench runs

REPO = Path(__file__).resolve().parents[1]




def corpus(data_dir: Path, n: int, out: Path, files: int = 4) -> list[Path]:
    lines: list[str] = []
    for f in sorted((data_dir / "sentences").glob("*.txt")):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    lines.append(line.rstrip("\n"))
                if len(lines) >= n:
                    break
        if len(lines) >= n:
            break
    per = -(-len(lines) // files)
    paths = []
    for k in range(files):
        p = out / f"part{k}.txt"
        p.write_text("".join(s + "\n" for s in lines[k * per:(k + 1) * per]), encoding="utf-8")
        paths.append(p)
    return paths


def run_engine(inputs, out: Path, engine: str, threads: int, workers: int | None, shard_size: int) -> dict:
    from simkit.engines import encode_sharded
    from simkit.fsutil import resolve_version
    from simkit.pipeline import Pipeline
    from simkit.threads import configure_threads

    configure_threads(threads)
    t0 = time.perf_counter()
    s = encode_sharded(inputs, out, Pipeline(num_threads=threads), engine=engine, shard_size=shard_size,
                       num_workers=workers, num_cpus_per_worker=threads if engine == "local" else 1)
    wall = time.perf_counter() - t0
    man = json.loads((resolve_version(out) / "manifest.json").read_text())  # a versioned store
    return {"count": s["count"], "wall_s": wall, "manifest": man}


def throughput(args) -> list[dict]:
    import ray

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = corpus(args.data_dir, args.n, tmp)
        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        print(f"ray.init: {time.perf_counter() - t:.1f} s (not counted below)", flush=True)
        from simkit.pipeline import Pipeline

        Pipeline().encode(["预热"])  # model files into the page cache for every run alike
        plan = [("local", 1, None), ("ray", 1, 1), ("local", 2, None), ("ray", 1, 2)]
        if args.cores is not None:
            plan = [p for p in plan if p[1] * (p[2] or 1) == args.cores]
        for k, (engine, threads, workers) in enumerate(plan):
            r = run_engine(inputs, tmp / f"out{k}", engine, threads, workers, args.shard_size)
            # encode seconds per shard, summed: the time the workers spent encoding
            busy = sum(float(s.get("seconds", 0)) for s in _shard_records(r))
            cores = threads * (workers or 1)
            row = {"engine": engine, "cores": cores, "threads_per_worker": threads, "workers": workers or 1,
                   "sentences": r["count"], "wall_s": round(r["wall_s"], 2),
                   "sent_per_s": round(r["count"] / r["wall_s"], 1),
                   "encode_s_summed": round(busy, 2),
                   "per_worker_sent_per_s": round(r["count"] / busy, 1) if busy else None}
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(tmp / f"out{k}")
        ray.shutdown()
    return rows


def _shard_records(r: dict) -> list[dict]:
    return r["manifest"]["shards"]  # each with the seconds its worker spent encoding it


MEM_CHILD = r"""
import json, resource, sys, time
import numpy as np
mode, store, chunk, train = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from simkit.index.build import build_index, read_vectors
from simkit.index.vector import VectorIndex
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
base = rss_kb()
t = time.perf_counter()
if mode == "stream":
    idx = build_index(store, factory="IVF256,PQ32x4", chunk_size=chunk, train_size=train)
else:  # the pre-shard path: the whole matrix in memory, trained on the same number of rows
    src = read_vectors(store)
    X = np.ascontiguousarray(src.vectors)
    idx = VectorIndex("IVF256,PQ32x4").train(X[:train], expected_count=len(X))
    idx.add(X, src.ids)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mode": mode, "count": len(idx), "seconds": round(time.perf_counter() - t, 1),
                  "rss_after_imports_mb": round(base / 1024, 1), "peak_rss_mb": round(peak / 1024, 1)}))
"""


def make_store(path: Path, n: int, dim: int, shard: int) -> None:
    from simkit.store import file_sha256, write_ids, write_manifest

    rng = np.random.default_rng(0)
    (path / "shards").mkdir(parents=True)
    shards = []
    for k, a in enumerate(range(0, n, shard)):
        m = min(shard, n - a)
        X = rng.standard_normal((m, dim), dtype=np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        name = f"part-{k:05d}"
        np.save(path / "shards" / f"{name}.npy", X)
        write_ids(path / "shards" / f"{name}.ids", [f"doc{a + i}" for i in range(m)])
        shards.append({"name": name, "count": m, "input": 0, "start": a,
                       "sha256": file_sha256(path / "shards" / f"{name}.npy")})
    write_manifest(path, {"shards": shards}, (n, dim))


def memory(args) -> list[dict]:
    dim = 256
    n = int(args.store_factor * args.budget_mb * 2**20 / (dim * 4))
    chunk = int(args.budget_mb * 2**20 / 8 / (dim * 4))  # a chunk: 1/8 of the budget
    train = 40 * 256  # 40 points per IVF list
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        make_store(store, n, dim, shard=chunk * 2)
        size = sum(f.stat().st_size for f in (store / "shards").glob("*.npy")) / 2**20
        print(f"store: {n} x {dim} float32 = {size:.0f} MB in {len(list(store.glob('shards/*.npy')))} shards; "
              f"budget {args.budget_mb} MB; chunk {chunk} rows; train sample {train} rows", flush=True)
        # One FAISS thread: memory is measured here, not speed (spinning OpenMP threads on a
        # loaded 2-core machine only slow the run down).
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        for mode in ("stream", "whole"):
            out = subprocess.run([sys.executable, "-c", MEM_CHILD, mode, str(store), str(chunk), str(train)],
                                 env=env, capture_output=True, text=True, check=True)
            row = {**json.loads(out.stdout.strip().splitlines()[-1]), "store_mb": round(size),
                   "budget_mb": args.budget_mb}
            row["peak_minus_imports_mb"] = round(row["peak_rss_mb"] - row["rss_after_imports_mb"], 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "chinese-pairs")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--budget-mb", type=float, default=64)
    ap.add_argument("--store-factor", type=float, default=5)
    ap.add_argument("--skip", choices=("throughput", "memory"), default=None)
    ap.add_argument("--cores", type=int, choices=(1, 2), default=None, help="Only the runs on this many cores.")
    args = ap.parse_args()
    import torch

    print(f"CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; torch {torch.__version__}; "
          f"load average {os.getloadavg()}", flush=True)
    results = {}
    if args.skip != "throughput":
        results["throughput"] = throughput(args)
    if args.skip != "memory":
        results["memory"] = memory(args)
    print(f"load average at the end: {os.getloadavg()}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
