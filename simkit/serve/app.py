"""The FastAPI app of ``simkit serve``: search, encode, similarity and paraphrase over named
indexes, with dynamic batching, limits, an optional API key, hot reload and a search page.

>>> from simkit.serve import Registry, create_app                    # doctest: +SKIP
>>> app = create_app(Registry({"faq": "faq-index/"}))               # then: uvicorn.run(app)

No endpoint reads a path from the request: the indexes are the ones given at start-up.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import InputError, SimkitError
from .registry import Loaded, Registry, Served

log = logging.getLogger("simkit.serve")
Scalar = str | int | float | bool | None


@dataclass
class Limits:
    """What one request may ask; a request over a limit gets a JSON error naming it."""

    max_texts: int = 64  # texts (queries, pairs, vectors) per request
    max_chars: int = 2000  # characters per text
    max_body_bytes: int = 1 << 20  # request body
    max_top_k: int = 100
    max_paraphrase_n: int = 64  # candidates sampled per paraphrase request
    timeout_s: float = 30.0  # per request, queueing included
    reload_interval_s: float = 1.0  # how often each index's version token is read


class ApiError(Exception):
    """An error answered as ``{"error": message, "limit": name?}`` with an HTTP status."""

    def __init__(self, status: int, message: str, limit: str | None = None, value: Any = None):
        super().__init__(message)
        self.status, self.message, self.limit, self.value = status, message, limit, value

    def body(self) -> dict:
        out: dict = {"error": self.message}
        if self.limit is not None:
            out["limit"] = self.limit
            out["max"] = self.value
        return out


class Json(JSONResponse):
    """Compact UTF-8 JSON (Chinese stays readable); no NaN."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                          default=_default).encode("utf-8")


def _default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# -- request bodies -------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: str | None = Field(None, description="Name of the index; optional when one is served.")


class SearchRequest(_Body):
    queries: list[str] | None = Field(None, description="Texts, encoded by the index's own pipeline.")
    vectors: list[list[float]] | None = Field(None, description="Vectors in the index's input space, instead of queries.")
    top_k: int = Field(10, ge=1)
    filter: dict[str, Scalar] | None = Field(None, description="Keep hits whose metadata has these key/value pairs.")


class EncodeRequest(_Body):
    texts: list[str]


class SimilarityRequest(_Body):
    pairs: list[tuple[str, str]] = Field(description="[[text_a, text_b], ...]: the cosine of each pair.")


class ParaphraseRequest(_Body):
    text: str
    n: int = Field(20, ge=1, description="Candidates sampled.")
    top_k: int | None = Field(None, ge=1, description="Candidates kept after reranking (the hits; default: n).")
    sample_top_k: int | None = Field(None, ge=1, description="Sample among the K likeliest tokens.")
    max_new_tokens: int | None = Field(None, ge=1, le=256, description="Most tokens generated (default: the model's "
                                       "max_seq_length).")
    top_p: float | None = Field(0.95, gt=0, le=1)
    temperature: float = Field(1.0, ge=0)
    seed: int | None = None
    rerank: Literal["cosine", "likelihood"] = "cosine"
    min_score: float | None = None


# -- middleware -----------------------------------------------------------------------------
class BodyLimit:
    """Refuse a body over ``max_bytes`` with 413: by its Content-Length, else while reading it.

    The body (at most ``max_bytes``) is read here and handed on whole, so a chunked upload
    without a length is stopped at the limit too.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        error = ApiError(413, f"the request body is over {self.max_bytes} bytes", "max_body_bytes", self.max_bytes)
        length = dict(scope.get("headers", ())).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _send_json(send, error)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await _send_json(send, error)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for a disconnect, as the server would

        await self.app(scope, replay, send)


async def _send_json(send, error: ApiError) -> None:
    body = Json(error.body()).body
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# -- the app --------------------------------------------------------------------------------
def create_app(registry: Registry, limits: Limits | None = None, api_key: str | None = None) -> FastAPI:
    """The service over ``registry``'s indexes. ``api_key``: when set, every endpoint except
    ``/`` (the page) and ``/health`` wants ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    limits = limits or Limits()
    key = api_key.encode("utf-8") if api_key else None
    started = time.time()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        poller = asyncio.create_task(_poll(registry, limits.reload_interval_s), name="simkit-reload")
        try:
            yield
        finally:
            poller.cancel()
            await registry.aclose()

    app = FastAPI(title="simkit serve", version=__version__, lifespan=lifespan, default_response_class=Json,
                  description="Semantic search over simkit indexes. Errors are `{\"error\": ..., "
                  "\"limit\": ...}` with a 4xx/5xx status.")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return Json(e.body(), status_code=e.status)

    @app.exception_handler(SimkitError)
    async def _simkit_error(request: Request, e: SimkitError):
        return Json({"error": str(e)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        detail = [{"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")} for err in errors]
        return Json({"error": f"invalid request: {where}: {first.get('msg', 'bad value')}", "detail": detail},
                    status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return Json({"error": str(e.detail)}, status_code=e.status_code, headers=getattr(e, "headers", None))

    async def check_key(request: Request) -> None:  # async: no thread-pool hop per request
        if key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode("utf-8"), key):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")

    guarded = [Depends(check_key)]

    def texts_ok(name: str, texts: list[str], per: int = 1) -> None:
        if not texts:
            raise ApiError(422, f"{name} is empty; give at least one")
        if len(texts) > limits.max_texts * per:
            raise ApiError(422, f"{name}: {len(texts) // per} items; at most {limits.max_texts} per request",
                           "max_texts", limits.max_texts)
        for i, t in enumerate(texts):
            if not t.strip():
                raise ApiError(422, f"{name}[{i // per}] is empty; expected a non-empty text")
            if len(t) > limits.max_chars:
                raise ApiError(422, f"{name}[{i // per}] has {len(t)} characters; at most {limits.max_chars}",
                               "max_chars", limits.max_chars)

    async def limited(coro):
        try:
            return await asyncio.wait_for(coro, limits.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the request took over {limits.timeout_s:g} s", "timeout_s", limits.timeout_s) from None

    def pick(name: str | None) -> tuple[Served, Loaded]:
        served = registry.get(name)
        return served, served.current  # one version for the whole request

    async def encode(state: Loaded, texts: list[str], step=None):
        if state.batcher is None:
            raise ApiError(422, "this index was built from bare vectors and has no model: search it with \"vectors\"")
        return await state.batcher.submit(texts, step or Vectors(state.pipeline))

    # -- endpoints ------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(_PAGE)

    @app.get("/health")
    async def health():
        return {"status": "ok", "version": __version__, "uptime_s": round(time.time() - started, 1),
                "indexes": {s.name: {"version": s.current.version, "count": len(s.current.index),
                                     "reloads": s.reloads} for s in registry.indexes.values()},
                "batches": registry.batch_stats()}

    @app.get("/indexes", dependencies=guarded)
    async def indexes():
        return {"indexes": [_describe(s) for s in registry.indexes.values()]}

    @app.post("/search", dependencies=guarded)
    async def search(req: SearchRequest):
        """Nearest documents for each query text (or vector): the hits `simkit index query` gives."""
        served, state = pick(req.index)
        if req.top_k > limits.max_top_k:
            raise ApiError(422, f"top_k={req.top_k}; at most {limits.max_top_k}", "max_top_k", limits.max_top_k)
        if (req.queries is None) == (req.vectors is None):
            raise ApiError(422, "give either \"queries\" (texts) or \"vectors\", not both or neither")

        async def work():
            if req.queries is not None:  # encoded and searched with the batch it joins
                texts_ok("queries", req.queries)
                return await encode(state, req.queries, Search(state, req.top_k, req.filter))
            else:
                if not req.vectors:
                    raise ApiError(422, "vectors is empty; give at least one")
                if len(req.vectors) > limits.max_texts:
                    raise ApiError(422, f"vectors: {len(req.vectors)} rows; at most {limits.max_texts} per request",
                                   "max_texts", limits.max_texts)
                if len({len(v) for v in req.vectors}) != 1:
                    raise ApiError(422, "vectors: rows of different lengths")
                X = np.asarray(req.vectors, dtype=np.float32)
            return await registry.model_thread.run(_search, state.index, X, req.top_k, req.filter)

        results = await limited(work())
        return Json({"index": served.name, "version": state.version, "results": results})

    @app.post("/encode", dependencies=guarded)
    async def encode_texts(req: EncodeRequest):
        """The vectors the index's pipeline makes (its transform chain included)."""
        served, state = pick(req.index)
        texts_ok("texts", req.texts)
        X = await limited(encode(state, req.texts))
        return {"index": served.name, "dim": int(X.shape[1]), "vectors": X.tolist()}

    @app.post("/similarity", dependencies=guarded)
    async def similarity(req: SimilarityRequest):
        """Cosine of the pipeline's vectors of each pair."""
        served, state = pick(req.index)
        flat = [t for pair in req.pairs for t in pair]
        texts_ok("pairs", flat, per=2)
        X = await limited(encode(state, flat))
        norms = np.linalg.norm(X, axis=1)
        norms[norms == 0] = 1.0
        X = X / norms[:, None]
        return {"index": served.name, "scores": np.einsum("ij,ij->i", X[0::2], X[1::2]).tolist()}

    @app.post("/paraphrase", dependencies=guarded)
    async def paraphrase(req: ParaphraseRequest):
        """Similar sentences sampled from the index's model (SimBERT's gen_synonyms)."""
        served, state = pick(req.index)
        texts_ok("text", [req.text])
        if req.n > limits.max_paraphrase_n:
            raise ApiError(422, f"n={req.n}; at most {limits.max_paraphrase_n}", "max_paraphrase_n",
                           limits.max_paraphrase_n)
        if state.shared is None:
            raise ApiError(422, "this index was built from bare vectors and has no model to generate with")
        args = dict(n=req.n, top_k=req.top_k or req.n, sample_top_k=req.sample_top_k, top_p=req.top_p,
                    temperature=req.temperature, max_new_tokens=req.max_new_tokens, seed=req.seed,
                    rerank=req.rerank, min_score=req.min_score)
        cands = await limited(registry.model_thread.run(_paraphrase, state.shared, req.text, args))
        return {"index": served.name, "source": req.text, "candidates": cands}

    return app


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A socket bound to ``host:port``, or an :class:`InputError` saying why it cannot be
    (address in use, a host that does not resolve): checked before the models load, and
    reported in one line rather than in uvicorn's start-up log."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise InputError(f"--host {host!r} does not resolve ({getattr(e, 'strerror', None) or e}); "
                         "expected an address such as 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts bind at once
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def run(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False,
        sock: socket.socket | None = None) -> None:
    """Serve ``app`` with uvicorn in this process (one process: the model is loaded once), on
    ``sock`` (from :func:`listen`) or on a new socket bound to ``host:port``."""
    import uvicorn

    sock = sock if sock is not None else listen(host, port)
    config = uvicorn.Config(app, log_level="info", access_log=verbose)
    uvicorn.Server(config).run(sockets=[sock])


async def _poll(registry: Registry, interval: float) -> None:
    """Hot reload: read each index's version token every ``interval`` seconds."""
    while True:
        await asyncio.sleep(interval)
        for served in list(registry.indexes.values()):
            try:
                await asyncio.to_thread(registry.refresh, served)
            except Exception:  # never let the poller die
                log.exception("simkit serve: reload check of %r failed", served.name)


def _describe(served: Served) -> dict:
    state = served.current
    index = state.index
    return {"name": served.name, "count": len(index), "dim": index.dim_, "dim_in": index.dim_in_,
            "kind": index.kind, "metric": index.metric, "version": state.version,
            "can_encode": state.batcher is not None, "model": index.model_ref_}


class Vectors:
    """Batcher step: the pipeline's vectors (its transform chain over the model's rows)."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.key = ("vectors", id(pipeline))

    def __call__(self, blocks: list[np.ndarray]) -> list[np.ndarray]:
        return _split(self.pipeline.transform_vectors(np.concatenate(blocks)), blocks)


class Search:
    """Batcher step: the pipeline's vectors searched in the index, one FAISS call for all the
    requests of a batch that ask this index version for the same ``top_k`` (no filter)."""

    def __init__(self, state: Loaded, top_k: int, flt: dict | None):
        self.state, self.top_k, self.filter = state, top_k, flt
        self.key = ("search", id(state), top_k) if not flt else ("search", id(self))

    def __call__(self, blocks: list[np.ndarray]) -> list[list]:
        X = self.state.pipeline.transform_vectors(np.concatenate(blocks))
        return _split(_search(self.state.index, X, self.top_k, self.filter), blocks)


def _split(rows, blocks: list[np.ndarray]) -> list:
    out, start = [], 0
    for b in blocks:
        out.append(rows[start:start + len(b)])
        start += len(b)
    return out


def _search(index, X: np.ndarray, top_k: int, flt: dict | None) -> list:
    """``index.search`` (on the model thread); with ``flt``, hits whose metadata match it,
    searching deeper until ``top_k`` match or the whole index was seen."""
    if not flt:
        return index.search(X, top_k=top_k)
    n, out = len(index), []
    for row in X:
        k = min(n, max(8 * top_k, 64))
        while True:
            hits = [h for h in index.search(row[None, :], top_k=k)[0] if _matches(h["metadata"], flt)]
            if len(hits) >= top_k or k >= n:
                break
            k = min(n, 8 * k)
        out.append(hits[:top_k])
    return out


def _matches(meta, flt: dict) -> bool:
    if not isinstance(meta, dict):
        return False
    for k, want in flt.items():
        if k not in meta:
            return False
        got = meta[k]
        if got != want or isinstance(got, bool) != isinstance(want, bool):  # true is not 1
            return False
    return True


def _paraphrase(shared, text: str, args: dict) -> list:
    """On the model thread: the shared encoder's paraphraser, made on first use."""
    if shared.paraphraser is None:
        from ..generate import Paraphraser

        shared.paraphraser = Paraphraser(shared.encoder)  # refuses a model without an LM head
    return shared.paraphraser.similar(text, **args)


_PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")
