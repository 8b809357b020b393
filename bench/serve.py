"""`simkit serve` against the search service a user would write, under concurrent load.

One index of N Chinese questions (unique sentences of ``pairs/bq-train.tsv`` of the shared
``chinese-pairs`` data, read in place, never copied), encoded by the bundled default model
(``Pipeline()``), exact search. Two servers on 127.0.0.1, each in its own process with the
same torch thread count:

(a) ``simkit serve`` (dynamic batching on one model thread);
(b) the peer, written the two ways FastAPI allows, one ``encode`` per request and a
    ``faiss.IndexFlatIP`` search: ``def`` (FastAPI runs it in its thread pool, requests
    concurrently) and ``async def`` (in the event loop, one request at a time). The ratio is
    to the faster of the two in each cell.

A bounded async loop runs C clients for --seconds (each client sends one request of
--queries-per-request queries over its own keep-alive connection, waits for the answer,
sends the next); per cell: requests/s, p50 and
p99 latency. The client is ``bench/_http.py``, not httpx, whose pool slows down with the
number of connections (at 64 it measured itself). The cells rotate through the servers
--repeats times; the table shows medians. The client runs on the same CPUs as the servers (a
load all share alike). "raw encoder" is ``Pipeline.encode`` on batches of --max-batch queries
in this process: the ceiling for (a).

(c) infinity-emb, the embedding server users would deploy instead, for ``/encode`` only (it
has no index): it does not install beside the project's stack (``pip install --dry-run -c
bench/constraints.txt 'infinity-emb[torch,server]'`` (0.0.78) wants transformers 4.57,
sentence-transformers 3.4, numpy 1.26), so it runs from its own venv, given by --infinity:

    python3 -m venv /tmp/infenv && /tmp/infenv/bin/pip install torch==2.13.0 'infinity-emb[torch,server]'
    python bench/serve.py --infinity /tmp/infenv/bin/infinity_emb ...

It serves the bundled model saved as Hugging Face files (``bench/encode.py``'s export,
truncating at the same 64 tokens) with its defaults (engine torch, mean pooling, batch size
--max-batch, the same thread count); simkit serve answers ``/encode`` from a second index
whose pipeline has mean pooling, so both return the same vectors (the min cosine over 50
queries is printed).

    python bench/serve.py --data-dir ../shared/data/chinese-pairs --n 20000   # the issue's size
    python bench/serve.py --data-dir ../shared/data/chinese-pairs --n 5000 --seconds 10 --repeats 2

"raw encoder" is measured both ways a batch can run (one padded forward pass, and cut by the
token budget simkit serve uses, ``--max-tokens-per-batch``); the faster is the limit.

Each cell also reports the CPUs the server process used (its main thread, the event loop, in
brackets) and the load client, from /proc and this process's CPU time. The last line turns
them into a bound for this machine: CPU a query needs outside the model (event loop + client)
plus the raw encoder's CPU per sentence, over the CPUs there are.

One run of the first line without --infinity, 2026-11-28, same machine, quiet (load 0.7 at the
start), after that CPU accounting was added; medians of 2 runs:

| clients | server | req/s | p50 / p99 ms | vs best peer | CPUs: server (event loop) / client |
|---:|---|---:|---:|---:|---|
| 1 | simkit serve | 151.5 | 6.3 / 10.4 | 2.03x | 1.96 (0.08) / 0.02 |
| 8 | simkit serve | 257.6 | 29.2 / 54.3 | 3.57x | 1.83 (0.12) / 0.02 |
| 64 | simkit serve | 528.4 | 106.7 / 341.1 | 7.05x | 1.73 (0.22) / 0.02 |
| 64 | peer (def) | 62.3 | 1013.1 / 1388.0 | 0.83x | 1.56 (0.07) / 0.01 |
| 64 | peer (async) | 75.0 | 832.2 / 1002.6 | 1.00x | 1.91 (0.91) / 0.02 |

The raw encoder read 980.1 sentences/s (token budget 512) with 1.97 CPUs busy: 2.013 ms of
CPU a sentence. At 64 clients a query cost the event loop 0.411 ms and the client 0.045 ms,
so on these 2 CPUs no scheduling could pass 810.0 queries/s = 83 % of the raw encoder; the
service reached 528.4 = 54 %. A 90 % bound needs the whole HTTP path under ~0.23 ms of CPU a
query, and the model at full speed while it runs beside it.

One run of the first line with --infinity (below), 2026-11-28, Intel Xeon, 2 logical CPUs,
quiet machine (load 0.5 at the start), the stage-10 default weights with the fast RoFormer
attention of ``simkit.models.attention`` (in every server that loads them through simkit:
simkit serve and both peers; infinity-emb loads the same weights through transformers),
uvloop + httptools installed, each server 2 torch threads, max batch 64, window 2 ms, token
budget 512; medians of 2 runs:

| clients | server | req/s | p50 / p99 ms | vs best peer |
|---:|---|---:|---:|---:|
| 1 | simkit serve | 157.9 | 6.1 / 10.1 | 2.26x |
| 1 | peer (def) | 65.2 | 15.7 / 29.7 | 0.93x |
| 1 | peer (async) | 70.0 | 11.9 / 39.8 | 1.00x |
| 8 | simkit serve | 278.7 | 27.6 / 51.6 | 3.62x |
| 8 | peer (def) | 77.1 | 104.1 / 141.7 | 1.00x |
| 8 | peer (async) | 76.7 | 97.7 / 211.2 | 0.99x |
| 64 | simkit serve | 516.4 | 108.9 / 335.3 | 6.77x |
| 64 | peer (def) | 59.4 | 1076.1 / 1382.9 | 0.78x |
| 64 | peer (async) | 76.3 | 820.4 / 944.9 | 1.00x |

No errors; the same top hit for 50/50 queries. The raw encoder read 519.2 sentences/s on
batches of 64 in one padded pass and 982.6 cut by the 512-token budget (one long query no
longer pads the other 63), so the limit is 982.6 and the service at 64 clients reaches 53%
of it, not the issue's 90%. ``/encode`` against infinity-emb in the same run (min cosine of
the two servers' vectors 1.000000):

| clients | server | req/s | p50 / p99 ms | vs infinity-emb |
|---:|---|---:|---:|---:|
| 1 | simkit serve /encode | 173.2 | 5.6 / 8.9 | 3.12x |
| 1 | infinity-emb /embeddings | 55.4 | 17.3 / 27.4 | 1.00x |
| 8 | simkit serve /encode | 321.0 | 23.9 / 44.7 | 4.36x |
| 8 | infinity-emb /embeddings | 73.7 | 109.1 / 150.3 | 1.00x |
| 64 | simkit serve /encode | 497.1 | 114.3 / 398.7 | 2.28x |
| 64 | infinity-emb /embeddings | 218.3 | 285.0 / 513.6 | 1.00x |

The run before it (same command and day, before the fast attention): 64 clients 461.8 req/s
= 5.86x, p99 373 vs 903 ms, 50% of a 923.0 limit; 8 clients 331.9 (4.32x); 1 client 148.2
(2.09x); /encode vs infinity-emb 1.92x / 4.42x / 2.85x at 64 / 8 / 1 clients. The run before
that (no uvloop / httptools) read 491.5 req/s at 64 clients (6.36x, 56% of an 869.9 limit),
314.7 at 8, 141.8 at 1: runs differ by about as much as that here.

The same day with ``--queries-per-request 8`` (a client that batches its own queries; the
peers encode a request's queries in one call; no --infinity, no uvloop): 64 clients 78.9
req/s = 630.8 queries/s, 70% of that run's limit (905.9), 2.02x the faster peer (312.2
queries/s) with p99 994 vs 1786 ms; 8 clients 639.3 queries/s, 1.96x; 1 client 1.19x.

Where the rest goes, on two CPUs (scratch runs before the batch-fill change, 5k index, 64
clients, ~450 req/s): the service process used about 1.8 of them (/proc/PID/stat) and the
load client the rest; the model thread was busy ~83% of the time (py-spy), but its forward
passes ran at about 55% of their unshared speed, because the event loop (HTTP, JSON,
routing: ~1 ms of CPU a request) takes one of the two cores the OpenMP team needs.
Installing uvloop + httptools, a smaller GIL switch interval and ``OMP_WAIT_POLICY=PASSIVE``
did not help (scratch runs, within noise or slower); one torch thread was slower (379 vs 451
req/s on a 5k index).

Earlier the same day, before batches waited for as many texts as the last one held (a
batch then started with whichever requests had come back): 64 clients 408.0 req/s (45% of
a 904.1 limit), 8 clients 250.3, 1 client 98.8; /encode vs infinity-emb 2.08x at 64 clients.

Earlier, before the token budget (2026-11-27, stage-9 weights): 64 clients 260.4 vs 68.2
req/s = 3.82x, then 63% of a limit measured as one padded pass (414.8 sentences/s); with
``--dtype int8`` (stage-10 weights, peers fp32) 377.2 vs 78.4 req/s = 4.81x.
"""


import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _http import Conn  # bench/ is on sys.path when a bench runs
from _machine import cpu_model

HERE = Path(__file__).resolve()
# The peer written the two ways FastAPI allows: a ``def`` endpoint (run in FastAPI's thread
# pool, requests concurrently) and an ``async def`` one (run in the event loop, one at a time).
PEERS = {"peer (def)": "def", "peer (async)": "async"}


def questions(data_dir: Path, n: int, n_queries: int, seed: int) -> tuple[list[str], list[str]]:
    """N corpus questions and queries (other questions) from the BQ pairs, shuffled."""
    seen: dict[str, None] = {}
    for line in (data_dir / "pairs" / "bq-train.tsv").read_text(encoding="utf-8").splitlines():
        for s in line.split("\t")[:2]:
            if s.strip():
                seen.setdefault(s.strip(), None)
    texts = list(seen)
    if len(texts) < n + n_queries:
        sys.exit(f"only {len(texts)} questions; lower --n")
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order[:n]], [texts[i] for i in order[n:n + n_queries]]




def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds of a process (or of one of its threads), from /proc."""
    where = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        fields = Path(where).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the peer: what a user would write ------------------------------------------------------
def peer_app(folder: Path, threads: int, mode: str = "def"):
    import faiss
    from fastapi import FastAPI
    from pydantic import BaseModel

    from simkit.pipeline import Pipeline

    model = Pipeline(num_threads=threads)
    X = np.load(folder / "vectors.npy")
    texts = json.loads((folder / "texts.json").read_text(encoding="utf-8"))
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    model.encode(["预热"])

    class Query(BaseModel):
        queries: list[str]
        top_k: int = 10

    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    def search(q: Query):
        v = model.encode(q.queries)  # the request's queries in one call
        faiss.normalize_L2(v)
        D, ids = index.search(v, q.top_k)
        return {"results": [[{"id": str(i), "score": float(d), "text": texts[i]} for d, i in zip(drow, irow)]
                            for drow, irow in zip(D, ids)]}

    if mode == "def":  # FastAPI runs it in its thread pool, concurrently
        app.post("/search")(search)
    else:  # in the event loop, one request at a time, on the thread that loaded the model

        async def search_async(q: Query):
            return search(q)

        app.post("/search")(search_async)
    return app


# -- load -----------------------------------------------------------------------------------
async def load(url: str, body, queries: list[str], clients: int, seconds: float, per_request: int = 1,
               path: str = "/search") -> dict:
    port = int(url.rsplit(":", 1)[1])
    lat: list[float] = []
    errors = 0
    start = time.perf_counter()
    end = start + seconds

    async def client(c: int):
        nonlocal errors
        conn = Conn(port)
        i = c
        try:
            while time.perf_counter() < end:
                t = time.perf_counter()
                j = (i * per_request) % len(queries)
                qs = queries[j:j + per_request]
                qs += queries[:per_request - len(qs)]
                status, _ = await conn.request("POST", path, body(qs))
                if status == 200:
                    lat.append(time.perf_counter() - t)
                else:
                    errors += 1
                i += clients
        finally:
            await conn.close()

    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.perf_counter() - start
    lat.sort()
    return {"rps": len(lat) / elapsed, "qps": per_request * len(lat) / elapsed, "p50": 1000 * lat[len(lat) // 2] if lat else float("nan"),
            "p99": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
            "n": len(lat), "errors": errors}


def wait_up(url: str, proc: subprocess.Popen, log: Path, limit: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    sys.exit(f"server did not start in {limit} s")


def table(cells: dict, clients: list[int], names: list[str], peers: list[str], unit: str, versus: str) -> None:
    """Markdown rows of medians per (name, clients), the ratio to the best of ``peers``."""
    print(f"| clients | server | req/s | {unit} | p50 ms | p99 ms | errors (all runs) | req/s vs {versus} "
          "| CPUs: server (its event loop) / client |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    keys = ("rps", "qps", "p50", "p99", "server_cpus", "loop_cpus", "client_cpus")
    for c in clients:
        med = {name: {k: statistics.median(r[k] for r in cells[(name, c)]) for k in keys} for name in names}
        best = max(med[name]["rps"] for name in peers)
        for name in names:
            m = med[name]
            errs = sum(r["errors"] for r in cells[(name, c)])
            print(f"| {c} | {name} | {m['rps']:.1f} | {m['qps']:.1f} | {m['p50']:.1f} | {m['p99']:.1f} | {errs} | "
                  f"{m['rps'] / best:.2f}x | {m['server_cpus']:.2f} ({m['loop_cpus']:.2f}) / "
                  f"{m['client_cpus']:.2f} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data/chinese-pairs"))
    ap.add_argument("--n", type=int, default=20000, help="Questions in the index.")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--seconds", type=float, default=10.0, help="Length of one cell.")
    ap.add_argument("--repeats", type=int, default=2, help="Alternating runs per cell (median shown).")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each server.")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--window-ms", type=float, default=2.0)
    ap.add_argument("--max-tokens-per-batch", type=int, default=512,
                    help="simkit serve's token budget per forward pass (0: one pass per batch).")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "int8"],
                    help="simkit serve's compute dtype (the peers stay fp32); the raw encoder uses it too.")
    ap.add_argument("--queries-per-request", type=int, default=1,
                    help="Queries each request carries (a client that batches its own queries).")
    ap.add_argument("--infinity", type=Path, metavar="EXE",
                    help="infinity_emb executable of its own venv: adds /encode cells, simkit serve vs "
                    "infinity-emb on the bundled model (mean pooling both).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer", type=Path, help=argparse.SUPPRESS)  # internal: run the peer server
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--peer-mode", default="def", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.peer is not None:
        import uvicorn

        uvicorn.run(peer_app(args.peer, args.threads, args.peer_mode), host="127.0.0.1", port=args.port,
                    log_level="warning", access_log=False)
        return

    from simkit.index import VectorIndex
    from simkit.pipeline import Pipeline

    corpus, queries = questions(args.data_dir, args.n, 2000, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="simkit-bench-serve-"))
    pipe = Pipeline(num_threads=args.threads)
    t = time.perf_counter()
    X = pipe.encode(corpus, batch_size=64)
    print(f"encoded {len(corpus)} questions in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    VectorIndex(preset="flat", pipeline=pipe).add(X, [str(i) for i in range(len(corpus))], corpus).save(tmp / "idx")
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.save(tmp / "vectors.npy", np.ascontiguousarray(Xn, dtype=np.float32))
    (tmp / "texts.json").write_text(json.dumps(corpus, ensure_ascii=False), encoding="utf-8")

    # The ceiling: the encoder alone on full batches, in this process, in serve's dtype.
    if args.dtype != "fp32":
        pipe = Pipeline(num_threads=args.threads, dtype=args.dtype)
    # Both ways a batch can run: one padded forward pass, or cut by the token budget the
    # service uses; the faster is the limit.
    pipe.encode(queries[: args.max_batch])
    raw_rates, raw_cpus = {}, {}
    for budget in (0, args.max_tokens_per_batch):
        pipe.encoder.max_tokens_per_batch = budget
        raw, cpus = [], []
        for _ in range(5):
            t, c = time.perf_counter(), time.process_time()
            for s in range(0, 512, args.max_batch):
                pipe.encode(queries[s:s + args.max_batch], batch_size=args.max_batch)
            raw.append(512 / (time.perf_counter() - t))
            cpus.append((time.process_time() - c) / (time.perf_counter() - t))
        raw_rates[budget], raw_cpus[budget] = statistics.median(raw), statistics.median(cpus)
    raw_rate = max(raw_rates.values())
    raw_cpu = raw_cpus[max(raw_rates, key=raw_rates.get)]
    del pipe

    indexes = [str(tmp / "idx")]
    if args.infinity is not None:  # the same model with mean pooling (infinity-emb's), as HF files
        from encode import build_model

        mean = Pipeline(pooling="mean", num_threads=args.threads)
        VectorIndex(preset="flat", pipeline=mean).add(mean.encode(corpus[:100]), list(range(100))).save(tmp / "mean")
        build_model([], "bundled", tmp / "hf")
        conf = json.loads((tmp / "hf" / "tokenizer_config.json").read_text(encoding="utf-8"))
        conf["model_max_length"] = mean.max_seq_length  # both truncate where simkit does
        (tmp / "hf" / "tokenizer_config.json").write_text(json.dumps(conf), encoding="utf-8")
        indexes += [str(tmp / "mean"), "--name", "idx", "--name", "mean"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ports = {"simkit serve": free_port(), **{name: free_port() for name in PEERS}}
    cmds = {
        "simkit serve": [sys.executable, "-m", "simkit_cli.app", "-q", "serve", *indexes, "--port",
                         str(ports["simkit serve"]), "--threads", str(args.threads), "--max-batch",
                         str(args.max_batch), "--batch-window-ms", str(args.window_ms), "--max-texts", str(max(64, args.queries_per_request)),
                         "--max-tokens-per-batch", str(args.max_tokens_per_batch),
                         "--dtype", args.dtype],
        **{name: [sys.executable, str(HERE), "--peer", str(tmp), "--port", str(ports[name]),
                  "--threads", str(args.threads), "--peer-mode", mode] for name, mode in PEERS.items()},
    }
    bodies = {name: (lambda qs: {"index": "idx", "queries": qs, "top_k": 10}) for name in cmds}
    encoders = {}  # /encode cells, name: (server, path, body), against infinity-emb's /embeddings
    if args.infinity is not None:
        encoders["simkit serve /encode"] = ("simkit serve", "/encode", lambda qs: {"index": "mean", "texts": qs})
        ports["infinity-emb"] = free_port()
        cmds["infinity-emb"] = [str(args.infinity), "v2", "--model-id", str(tmp / "hf"), "--host", "127.0.0.1",
                                "--port", str(ports["infinity-emb"]), "--engine", "torch", "--device", "cpu",
                                "--pooling-method", "mean", "--batch-size", str(args.max_batch)]
        encoders["infinity-emb /embeddings"] = ("infinity-emb", "/embeddings",
                                                lambda qs: {"input": qs, "model": str(tmp / "hf")})
    procs = {}
    try:
        for name, cmd in cmds.items():
            log = tmp / f"{name.replace(' ', '-')}.log"
            procs[name] = subprocess.Popen(cmd, env={**env, "OMP_NUM_THREADS": str(args.threads), "DO_NOT_TRACK": "1",
                                                     "INFINITY_ANONYMOUS_USAGE_STATS": "0"},
                                           stdout=log.open("w"), stderr=subprocess.STDOUT)
            wait_up(f"http://127.0.0.1:{ports[name]}", procs[name], log)
        import httpx

        urls = {name: f"http://127.0.0.1:{p}" for name, p in ports.items()}
        agree = 0
        for q in queries[:50]:  # same answers: the top hit of both for 50 queries (warms both up)
            a = httpx.post(urls["simkit serve"] + "/search", json=bodies["simkit serve"]([q]), timeout=30).json()
            b = httpx.post(urls["peer (def)"] + "/search", json=bodies["peer (def)"]([q]), timeout=30).json()
            agree += a["results"][0][0]["id"] == b["results"][0][0]["id"]
        enc_cos = None
        if args.infinity is not None:  # same vectors: cosine of the two servers' vectors, 50 queries
            a = np.array(httpx.post(urls["simkit serve"] + "/encode", json={"index": "mean", "texts": queries[:50]},
                                    timeout=60).json()["vectors"])
            b = np.array([d["embedding"] for d in httpx.post(
                urls["infinity-emb"] + "/embeddings", json={"input": queries[:50], "model": str(tmp / "hf")},
                timeout=60).json()["data"]])
            enc_cos = float(((a / np.linalg.norm(a, axis=1, keepdims=True))
                             * (b / np.linalg.norm(b, axis=1, keepdims=True))).sum(1).min())
        searchers = [name for name in cmds if name != "infinity-emb"]
        routes = {**{name: (name, "/search", bodies[name]) for name in searchers}, **encoders}
        cells: dict[tuple[str, int], list[dict]] = {}
        for c in args.clients:
            for r in range(args.repeats):
                order = list(routes)[r % len(routes):] + list(routes)[:r % len(routes)]
                for name in order:
                    server, path, body = routes[name]
                    pid = procs[server].pid  # its main thread runs the event loop
                    before = (cpu_seconds(pid), cpu_seconds(pid, pid), time.process_time(), time.perf_counter())
                    res = asyncio.run(load(urls[server], body, queries, c, args.seconds,
                                           args.queries_per_request, path))
                    after = (cpu_seconds(pid), cpu_seconds(pid, pid), time.process_time(), time.perf_counter())
                    wall = after[3] - before[3]
                    res["server_cpus"], res["loop_cpus"], res["client_cpus"] = (
                        (b - a) / wall for a, b in zip(before[:3], after[:3]))
                    cells.setdefault((name, c), []).append(res)
                    print(f"  {name:24s} c={c:<3d} run {r + 1}: {res['rps']:7.1f} req/s  p50 {res['p50']:7.1f} ms  "
                          f"p99 {res['p99']:7.1f} ms  errors {res['errors']}", file=sys.stderr)
        stats = httpx.get(urls["simkit serve"] + "/health", timeout=30).json()["batches"]
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(30)

    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} logical CPUs; each server {args.threads} torch threads; "
          f"index: {len(corpus)} questions, flat, dim {X.shape[1]}; {args.seconds:g} s per cell, "
          f"median of {args.repeats} alternating runs; max batch {args.max_batch}, window {args.window_ms:g} ms; "
          f"simkit serve dtype {args.dtype}, peers fp32")
    print(f"raw encoder (Pipeline.encode, batches of {args.max_batch}, no server): "
          + ", ".join(f"{r:.1f} sentences/s with max_tokens_per_batch={b}" for b, r in raw_rates.items())
          + f"; the limit is the faster, {raw_rate:.1f}")
    print(f"top-1 agreement simkit serve vs peer: {agree}/50 queries")
    print(f"simkit serve batches: {stats}\n")
    print(f"{args.queries_per_request} queries a request\n")
    table(cells, args.clients, searchers, list(PEERS), "queries/s", "best peer")
    if args.infinity is not None:
        print(f"\n/encode, mean pooling, both servers: min cosine of their vectors over 50 queries {enc_cos:.6f}\n")
        table(cells, args.clients, list(encoders), ["infinity-emb /embeddings"], "texts/s", "infinity-emb")
    top_cells = cells[("simkit serve", max(args.clients))]
    top = statistics.median(r["qps"] for r in top_cells)
    print(f"\nsimkit serve at {max(args.clients)} clients ({args.queries_per_request} queries a request): "
          f"{top:.1f} queries/s = "
          f"{100 * top / raw_rate:.0f}% of the raw encoder")
    # What the limit leaves room for on this machine: CPU time a query costs outside the model
    # (the server's event-loop thread and the load client, which share these CPUs) added to
    # the raw encoder's CPU time per sentence, spread over every CPU the processes may use.
    ncpu = len(os.sched_getaffinity(0))
    extra = statistics.median((r["loop_cpus"] + r["client_cpus"]) / r["qps"] for r in top_cells)
    model = raw_cpu / raw_rate
    bound = ncpu / (model + extra)
    print(f"CPU a query costs at {max(args.clients)} clients: event-loop thread "
          f"{1e3 * statistics.median(r['loop_cpus'] / r['qps'] for r in top_cells):.3f} ms + load client "
          f"{1e3 * statistics.median(r['client_cpus'] / r['qps'] for r in top_cells):.3f} ms; the raw encoder "
          f"{1e3 * model:.3f} ms a sentence ({raw_cpu:.2f} CPUs busy). With {ncpu} CPUs shared, even a service "
          f"that never stalled the model could reach {bound:.1f} queries/s = {100 * bound / raw_rate:.0f}% "
          f"of the raw encoder")


if __name__ == "__main__":
    main()
