"""``simkit serve`` over a real socket: uvicorn on a free 127.0.0.1 port, tiny indexes built here.

Every request goes to 127.0.0.1 only, in bounded numbers, each with a timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from simkit.encoder import Encoder  # noqa: E402
from simkit.index import VectorIndex, load_index  # noqa: E402
from simkit.pipeline import Pipeline  # noqa: E402
from simkit.serve import Limits, Registry, create_app  # noqa: E402
from simkit.whitening import Whitening  # noqa: E402

LIMITS = Limits(max_texts=8, max_chars=50, max_body_bytes=20_000, timeout_s=20, reload_interval_s=0.2)


def _meta(i: int) -> dict:
    return {"topic": "finance" if i < 8 else "other", "n": i}


def _build(pipe, texts, path, extra: tuple[str, str] | None = None, overwrite=False):
    ids, docs = [f"d{i}" for i in range(len(texts))], list(texts)
    if extra is not None:
        ids.append(extra[0])
        docs.append(extra[1])
    meta = [_meta(i) for i in range(len(docs))]
    VectorIndex(preset="flat", pipeline=pipe).add(pipe.encode(docs), ids, docs, meta).save(path, overwrite=overwrite)


class Server:
    """uvicorn serving ``app`` in a thread, on a socket bound to 127.0.0.1:0."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def enc(tiny_bert_dir):
    return Encoder(tiny_bert_dir)


@pytest.fixture(scope="module")
def pipe(enc):
    """The tiny model's vectors whitened to 8 dims: a random model's raw vectors all have
    cosine > 0.99999, so neighbours would be ranked by rounding noise."""
    from conftest import TEXTS

    return Pipeline.from_encoder(enc).then(Whitening(8).fit(enc.encode(TEXTS, show_progress_bar=False)))


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipe):
    from conftest import TEXTS

    root = tmp_path_factory.mktemp("serve")
    _build(pipe, TEXTS, root / "faq")
    _build(pipe, TEXTS, root / "live")
    vecs = pipe.encode(TEXTS[:5])
    VectorIndex(preset="flat").add(vecs, [f"v{i}" for i in range(5)]).save(root / "bare")
    registry = Registry({"faq": root / "faq", "live": root / "live", "bare": root / "bare"}, window_ms=5)
    with Server(create_app(registry, LIMITS)) as srv:
        srv.root, srv.registry = root, registry
        yield srv


def post(server, path, body=None, **kw):
    return httpx.post(server.url + path, json=body, timeout=20, **kw)


def same_hits(got, want):
    """Same ids, texts, metadata in the same order; scores equal up to float noise: a text
    batched with others is padded to their length, which moves its vector by ~1e-7, and the
    tiny model's whitening scales that up (differences up to ~2e-5 seen; rank gaps are > 1e-3)."""
    assert [[h["id"] for h in row] for row in got] == [[h["id"] for h in row] for row in want]
    assert [[h["text"] for h in row] for row in got] == [[h["text"] for h in row] for row in want]
    assert [[h["metadata"] for h in row] for row in got] == [[h["metadata"] for h in row] for row in want]
    np.testing.assert_allclose([[h["score"] for h in row] for row in got],
                               [[h["score"] for h in row] for row in want], atol=1e-4)


def test_search_matches_index_query(server, texts):
    queries = [texts[0], texts[9], "银行卡怎么办"]
    r = post(server, "/search", {"index": "faq", "queries": queries, "top_k": 5})
    assert r.status_code == 200, r.text
    want = load_index(server.root / "faq").search_text(queries, top_k=5)
    same_hits(r.json()["results"], want)
    assert r.json()["results"][0][0]["id"] == "d0"
    # vectors instead of texts: the same hits as index.search on them
    q = load_index(server.root / "faq").query_pipeline().encode(queries)
    r = post(server, "/search", {"index": "faq", "vectors": q.tolist(), "top_k": 5})
    same_hits(r.json()["results"], want)
    # metadata filter: the best matching hits among those with the metadata, in order
    r = post(server, "/search", {"index": "faq", "queries": queries, "top_k": 3, "filter": {"topic": "finance"}})
    full = load_index(server.root / "faq").search_text(queries, top_k=len(texts))
    same_hits(r.json()["results"], [[h for h in row if h["metadata"]["topic"] == "finance"][:3] for row in full])
    r = post(server, "/search", {"index": "faq", "queries": queries[:1], "filter": {"n": True}})
    assert r.json()["results"] == [[]]  # true is not 1
    # a bare-vector index is searched by vectors
    r = post(server, "/search", {"index": "bare", "vectors": q[:1].tolist(), "top_k": 2})
    assert r.status_code == 200 and r.json()["results"][0][0]["id"] == "v0"


def test_encode_similarity_paraphrase(server, enc, pipe, texts):
    r = post(server, "/encode", {"index": "faq", "texts": texts[:3]})
    assert r.status_code == 200 and r.json()["dim"] == 8
    np.testing.assert_allclose(r.json()["vectors"], pipe.encode(texts[:3]), atol=1e-4)
    r = post(server, "/similarity", {"index": "faq", "pairs": [[texts[0], texts[0]], [texts[0], texts[8]]]})
    X = pipe.encode([texts[0], texts[8]])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    # the server encodes the four texts as one batch (other padding): rounding, as for /encode
    np.testing.assert_allclose(r.json()["scores"], [1.0, float(X[0] @ X[1])], atol=1e-4)
    from simkit.generate import Paraphraser

    r = post(server, "/paraphrase", {"index": "faq", "text": texts[0], "n": 4, "top_k": 2, "seed": 0})
    assert r.status_code == 200, r.text
    assert r.json()["candidates"] == Paraphraser(enc).similar(texts[0], n=4, top_k=2, seed=0)


def test_concurrent_clients_get_their_own_answers(server, texts):
    want = load_index(server.root / "faq").search_text(texts, top_k=4)
    before = server.registry.batch_stats()[0]["batches"]

    async def client(c: int, http) -> list[tuple[int, int, list]]:
        out = []
        for j in range(3):  # top_k differs between clients: one batch, several searches
            i, k = (c * 3 + j) % len(texts), 1 + c % 4
            r = await http.post("/search", json={"index": "faq", "queries": [texts[i]], "top_k": k})
            assert r.status_code == 200, r.text
            out.append((i, k, r.json()["results"][0]))
        return out

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=20,
                                     limits=httpx.Limits(max_connections=64)) as http:
            return await asyncio.wait_for(asyncio.gather(*(client(c, http) for c in range(64))), 60)

    answers = [a for per_client in asyncio.run(main()) for a in per_client]
    assert len(answers) == 192
    for i, k, hits in answers:
        same_hits([hits], [want[i][:k]])
    stats = server.registry.batch_stats()[0]
    assert stats["max_batch_seen"] > 1 and stats["batches"] - before < 192  # requests shared passes


BAD = [  # (body, status, words the error must contain)
    (b"{not json", 422, "invalid request"),
    ({"index": "faq"}, 422, "either"),
    ({"index": "faq", "queries": ["a"], "vectors": [[0.0]]}, 422, "either"),
    ({"index": "faq", "queries": ["问"] * 9}, 422, "max_texts"),
    ({"index": "faq", "queries": ["问" * 51]}, 422, "max_chars"),
    ({"index": "faq", "queries": ["  "]}, 422, "empty"),
    ({"index": "faq", "queries": ["a"], "top_k": 0}, 422, "top_k"),
    ({"index": "faq", "queries": ["a"], "top_k": 1000}, 422, "max_top_k"),
    ({"index": "faq", "queries": "花呗"}, 422, "queries"),
    ({"index": "nope", "queries": ["a"]}, 422, "no index named"),
    ({"queries": ["a"]}, 422, "several indexes"),
    ({"index": "faq", "queries": ["a"], "path": "/etc/passwd"}, 422, "path"),
    ({"index": "faq", "vectors": [[1.0, 2.0]]}, 422, "dimension"),
    ({"index": "faq", "vectors": [[1.0] * 8, [1.0]]}, 422, "lengths"),
    (b'{"index": "faq", "vectors": [[NaN' + b", 0" * 7 + b"]]}", 422, "NaN"),
    ({"index": "bare", "queries": ["a"]}, 422, "bare vectors"),
    ({"index": "faq", "queries": ["问"] * 8, "filter": {"topic": ["x"]}}, 422, "filter"),
]


def test_bad_bodies_get_json_errors_and_the_server_stays_up(server):
    for body, status, words in BAD:
        kw = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = httpx.post(server.url + "/search", timeout=20, headers={"content-type": "application/json"}, **kw)
        assert r.status_code == status, (body, r.text)
        assert words in json.loads(r.text)["error"] + json.dumps(r.json().get("limit")), (body, r.text)
    big = {"index": "faq", "queries": ["问" * 40] * 8, "pad": "x" * 20_000}
    r = post(server, "/search", big)
    assert r.status_code == 413 and r.json()["limit"] == "max_body_bytes"
    r = httpx.post(server.url + "/search", content=iter([b"x" * 8000] * 4), timeout=20)  # chunked, no length
    assert r.status_code == 413 and r.json()["limit"] == "max_body_bytes"
    r = post(server, "/paraphrase", {"index": "faq", "text": "花呗", "n": 1000})
    assert r.status_code == 422 and r.json()["limit"] == "max_paraphrase_n"
    r = post(server, "/paraphrase", {"index": "bare", "text": "花呗"})
    assert r.status_code == 422 and "no model" in r.json()["error"]
    r = post(server, "/similarity", {"index": "faq", "pairs": [["a"]]})
    assert r.status_code == 422 and "pairs" in r.json()["error"]
    assert httpx.get(server.url + "/nowhere", timeout=20).json() == {"error": "Not Found"}
    h = httpx.get(server.url + "/health", timeout=20)
    assert h.status_code == 200 and h.json()["status"] == "ok"
    assert post(server, "/search", {"index": "faq", "queries": ["花呗"]}).status_code == 200


def test_request_timeout_is_a_json_504(server, monkeypatch):
    registry = Registry({"faq": server.root / "faq"}, warmup=False)
    encoder = registry.indexes["faq"].current.shared.encoder
    real = encoder.encode

    def slow_encode(*a, **kw):
        time.sleep(0.3)
        return real(*a, **kw)

    monkeypatch.setattr(encoder, "encode", slow_encode)
    with Server(create_app(registry, Limits(timeout_s=0.02))) as slow:
        r = post(slow, "/search", {"queries": ["花呗"]})  # the model takes 300 ms: too long
        assert r.status_code == 504 and r.json()["limit"] == "timeout_s"
        assert httpx.get(slow.url + "/health", timeout=20).status_code == 200


def test_cli_token_budget_default_is_the_batchers():
    """The CLI spells the default out (importing simkit.serve there would need the extra)."""
    import inspect

    from simkit_cli.serve import serve

    from simkit.serve.batcher import MAX_TOKENS_PER_BATCH

    assert inspect.signature(serve).parameters["max_tokens"].default.default == MAX_TOKENS_PER_BATCH


def test_batches_wait_for_as_many_as_the_last_batch_held():
    """A lone request starts at once, whatever the window; after a batch of four, the next
    waits (up to the window) until four texts are there again, so it is not split."""
    from simkit.serve.batcher import MicroBatcher, OneThread

    class Rows:  # a stand-in model: one row per text
        def encode(self, texts, **kw):
            return np.arange(len(texts), dtype=np.float32)[:, None]

    thread = OneThread()
    batcher = MicroBatcher(Rows(), thread, max_batch=64, window_ms=60_000)

    async def main():
        try:
            one = await asyncio.wait_for(batcher.submit(["a"]), 30)  # would wait a minute before
            sizes = [batcher.max_seen]
            await asyncio.wait_for(asyncio.gather(*(batcher.submit([t]) for t in "abcd")), 30)
            sizes.append(batcher.max_seen)
            first = asyncio.ensure_future(batcher.submit(["e"]))
            await asyncio.sleep(0.05)  # the other three come back later
            rest = [asyncio.ensure_future(batcher.submit([t])) for t in "fgh"]
            await asyncio.wait_for(asyncio.gather(first, *rest), 30)
            return one, sizes
        finally:
            await batcher.aclose()

    try:
        one, sizes = asyncio.run(main())
    finally:
        thread.close()
    assert one.shape == (1, 1) and sizes == [1, 4]
    assert batcher.batches == 3 and batcher.texts == 9  # 1, then 4, then the 4 that came apart


def test_model_is_loaded_and_warmed_on_the_model_thread(server, monkeypatch):
    """Every torch call of the service happens on its one model thread, loading included: an
    OpenMP team started by a warm-up on another thread would compete with the model thread's."""
    import simkit.encoder

    seen = []
    real = simkit.encoder.Encoder.encode

    def spy(self, *a, **kw):
        seen.append(threading.current_thread().name)
        return real(self, *a, **kw)

    monkeypatch.setattr(simkit.encoder.Encoder, "encode", spy)
    registry = Registry({"faq": server.root / "faq"}, warmup=True)
    try:
        assert seen and all(name.startswith("simkit-model") for name in seen), seen
        assert registry.model_thread.call(threading.current_thread) is not threading.current_thread()
    finally:
        asyncio.run(registry.aclose())


def test_a_batch_runs_in_forward_passes_within_the_token_budget(server, texts, monkeypatch):
    """Concurrent requests share one encode call, cut by length into passes of at most
    max_tokens_per_batch padded tokens; 0 runs the batch as one padded pass. Same vectors."""
    import simkit.encoder

    shapes, watched = [], []
    real = simkit.encoder.Encoder._hidden_states

    def spy(self, input_ids, mask, first=True):
        if self in watched:  # not the other servers' encoders (a hot reload may run meanwhile)
            shapes.append(tuple(input_ids.shape))
        return real(self, input_ids, mask, first)

    monkeypatch.setattr(simkit.encoder.Encoder, "_hidden_states", spy)
    queries = [texts[i] * (1 + i % 2) for i in range(8)]  # lengths differ within the batch

    def run(budget: int):
        registry = Registry({"faq": server.root / "faq"}, window_ms=200, warmup=False,
                            max_tokens_per_batch=budget)
        batcher = registry.indexes["faq"].current.batcher
        watched[:] = [registry.indexes["faq"].current.shared.encoder]

        async def main():
            try:
                return await asyncio.wait_for(asyncio.gather(*(batcher.submit([q]) for q in queries)), 60)
            finally:
                await batcher.aclose()

        shapes.clear()
        try:
            rows = np.concatenate(asyncio.run(main()))
        finally:
            registry.model_thread.close()
        assert batcher.batches == 1  # one call on the model thread for the eight requests
        return rows, list(shapes)

    whole, one_pass = run(0)
    assert one_pass == [(8, max(s for _, s in one_pass))]
    budget = one_pass[0][1] * 3  # room for three of the longest, more of the short ones
    cut, passes = run(budget)
    assert len(passes) > 1 and sum(n for n, _ in passes) == 8
    assert all(n * width <= budget for n, width in passes)
    np.testing.assert_allclose(cut, whole, atol=1e-5)


def test_backend_option_runs_the_model_in_onnx_runtime(server, texts, monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("SIMKIT_CACHE", str(tmp_path / "cache"))
    registry = Registry({"faq": server.root / "faq"}, backend="onnx", dtype="fp32")
    with Server(create_app(registry, LIMITS)) as srv:
        assert registry.indexes["faq"].current.shared.encoder.backend == "onnx"
        got = post(srv, "/search", {"queries": texts[:3], "top_k": 3}).json()["results"]
        want = post(server, "/search", {"index": "faq", "queries": texts[:3], "top_k": 3}).json()["results"]
        same_hits(got, want)


def test_index_replaced_under_the_server_is_picked_up(server, pipe, texts, caplog):
    live = server.root / "live"
    old = httpx.get(server.url + "/health", timeout=20).json()["indexes"]["live"]["version"]
    new_text = "余额宝的收益怎么计算"
    stop, statuses, seen = threading.Event(), [], []

    def hammer():  # a client asking all along; no request may fail
        with httpx.Client(base_url=server.url, timeout=20) as http:
            while not stop.is_set() and len(statuses) < 2000:
                r = http.post("/search", json={"index": "live", "queries": [new_text], "top_k": 1})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    seen.append((r.json()["version"], r.json()["results"][0][0]["id"]))

    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        # a broken new version (config.json disagrees with the store) is refused; the old one serves
        from simkit.fsutil import resolve_version, write_pointer

        current = resolve_version(live)
        broken = live / "v-999999-0badc0de"  # a new version whose config disagrees with its store
        shutil.copytree(current, broken)
        cfg = json.loads((broken / "config.json").read_text())
        (broken / "config.json").write_text(json.dumps({**cfg, "count": cfg["count"] + 1}))
        write_pointer(live, broken.name)
        with caplog.at_level("WARNING", logger="simkit.serve"):
            deadline = time.monotonic() + 10
            while "could not load" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
        assert "could not load the new version of index 'live'" in caplog.text
        assert httpx.get(server.url + "/health", timeout=20).json()["indexes"]["live"]["version"] == old
        # a good new version (saved over it, as `simkit index build --overwrite` does) is picked up
        _build(pipe, texts, live, extra=("new", new_text), overwrite=True)
        deadline = time.monotonic() + 10
        while not (seen and seen[-1][1] == "new") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(20)
    assert statuses and set(statuses) == {200}, statuses
    assert seen[0][0] == old and seen[-1][1] == "new" and seen[-1][0] != old
    health = httpx.get(server.url + "/health", timeout=20).json()["indexes"]["live"]
    assert health["count"] == len(texts) + 1 and health["reloads"] == 1


def test_page_and_openapi(server):
    r = httpx.get(server.url + "/", timeout=20)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert '<form id="form"' in page and 'id="q"' in page and 'id="index"' in page
    assert 'api("/search"' in page and 'api("/indexes")' in page and "textContent" in page
    paths = httpx.get(server.url + "/openapi.json", timeout=20).json()["paths"]
    assert {"/health", "/indexes", "/search", "/encode", "/similarity", "/paraphrase"} <= set(paths)
    names = [ix["name"] for ix in httpx.get(server.url + "/indexes", timeout=20).json()["indexes"]]
    assert names == ["faq", "live", "bare"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_page_shows_hits_in_headless_chromium(server, tmp_path, texts):
    url = f"{server.url}/?index=faq&q={texts[0]}"
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path}", "--virtual-time-budget=10000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=60)
    dom = out.stdout
    assert 'class="hit"' in dom, out.stderr[-2000:]
    first = dom.split('class="hit"', 1)[1].split("</li>", 1)[0]
    assert texts[0] in first and "1.0000" in first


def test_cli_serves_with_api_key_and_names(tmp_path, pipe, texts):
    _build(pipe, texts[:10], tmp_path / "idx")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "SIMKIT_API_KEY": "s3cret", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "simkit_cli.app", "-q", "serve", str(tmp_path / "idx"),
                             "--name", "qa", "--port", str(port), "--threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "simkit serve did not start"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"queries": [texts[3]], "top_k": 1}
        assert httpx.post(url + "/search", json=body, timeout=20).status_code == 401
        wrong = httpx.post(url + "/search", json=body, headers={"x-api-key": "s3crex"}, timeout=20)
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        r = httpx.post(url + "/search", json=body, headers={"authorization": "Bearer s3cret"}, timeout=20)
        assert r.status_code == 200 and r.json()["index"] == "qa" and r.json()["results"][0][0]["id"] == "d3"
    finally:
        proc.terminate()
        proc.wait(20)


def test_cli_without_the_extra_says_how_to_install(tmp_path):
    # A stub that hides fastapi, as on an install without simkit[serve].
    (tmp_path / "fastapi.py").write_text("raise ImportError('no fastapi here', name='fastapi')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "simkit_cli.app", "serve", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "simkit: error: simkit serve needs the 'serve' extra (fastapi is missing): pip install 'simkit[serve]'"]


def test_cli_port_in_use_or_bad_host_is_one_line(tmp_path):
    # uvicorn reported these in its own multi-line log and exited 3; now one line, exit 1,
    # before any model loads.
    from simkit_cli.app import app
    from typer.testing import CliRunner

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        for extra, want in ((["--port", str(port)], f"cannot listen on 127.0.0.1:{port}: Address already in use"),
                            (["--host", "999.1.1.1"], "--host '999.1.1.1' does not resolve")):
            res = CliRunner().invoke(app, ["-q", "serve", str(tmp_path), *extra])
            assert res.exit_code == 1, res.output
            lines = res.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"simkit: error: {want}"), res.output
    finally:
        busy.close()
