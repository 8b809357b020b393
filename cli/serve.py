"""``simkit serve``: a search service over one or more indexes (the extra ``simkit[serve]``)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from simkit.errors import InputError

from .common import choice, handle_errors, log

HELP = """Serve indexes over HTTP: JSON search / encode / similarity / paraphrase and a search
page at /, with dynamic batching of concurrent requests and hot reload of replaced indexes.

Each index is served under --name (one per INDEX, in order; default: its directory name).
Binds 127.0.0.1 unless --host says otherwise; with --api-key (or $SIMKIT_API_KEY) every
endpoint but / and /health wants 'Authorization: Bearer KEY'. API docs at /docs.

Example:  simkit serve faq-index/ --port 8000
          curl -s localhost:8000/search -H 'content-type: application/json' -d '{"queries": ["花呗怎么还款"], "top_k": 3}'
"""


def register(app: typer.Typer) -> None:
    app.command("serve", help=HELP)(handle_errors(serve))


def serve(
    indexes: list[Path] = typer.Argument(..., help="Index directories (simkit index build)."),
    name: list[str] | None = typer.Option(None, "--name", "-n", help="Name of each INDEX, in order (repeat)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes the service to the network."),
    port: int = typer.Option(8000, "--port", "-p", min=0, max=65535),
    api_key: str | None = typer.Option(None, "--api-key", envvar="SIMKIT_API_KEY", show_envvar=True,
                                       help="Require this key (Authorization: Bearer KEY)."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, help="Most texts encoded in one batch (one model call)."),
    window_ms: float = typer.Option(2.0, "--batch-window-ms", min=0.0,
                                    help="Longest a batch waits for more requests (it starts as soon as "
                                    "as many wait as the last batch held)."),
    max_tokens: int = typer.Option(512, "--max-tokens-per-batch", min=0,
                                   help="Most padded tokens per forward pass: a batch is sorted by length and "
                                   "cut into passes (a longer text runs alone; 0: one pass)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch threads of the model (default: the CPUs allowed)."),
    backend: str | None = typer.Option(None, "--backend", help="Runtime of the model: torch or onnx (ONNX Runtime, "
                                       "simkit[onnx]). [default: torch]",
                                       parser=choice("torch", "onnx")),
    dtype: str | None = typer.Option(None, "--dtype", help="Compute dtype: fp32, bf16 (torch) or int8 (CPU). "
                                     "[default: fp32]", parser=choice("fp32", "bf16", "int8")),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Seconds a request may take, queueing included."),
    max_texts: int = typer.Option(64, "--max-texts", min=1, help="Most texts (queries, pairs, vectors) per request."),
    max_chars: int = typer.Option(2000, "--max-chars", min=1, help="Most characters per text."),
    max_body: int = typer.Option(1 << 20, "--max-body-bytes", min=1, help="Largest request body."),
) -> None:
    # Without the extra, this ImportError says how to install it (one line, exit 1).
    from simkit.serve import Limits, Registry, create_app, listen, run

    names = list(name or [])
    if names and len(names) != len(indexes):
        raise InputError(f"{len(names)} --name for {len(indexes)} indexes; give one per INDEX, or none")
    names = names or [p.resolve().name for p in indexes]
    if len(set(names)) != len(names):
        raise InputError(f"two indexes would share a name ({', '.join(names)}); give --name for each")
    for p in indexes:
        if not p.is_dir():
            raise InputError(f"{p}: not an index directory")
    sock = listen(host, port)  # a port in use fails here, in one line, before the models load
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("simkit serve: binding %s without --api-key; anyone who can reach it can query", host)
    registry = Registry(dict(zip(names, indexes)), max_batch=max_batch, window_ms=window_ms, threads=threads,
                        backend=backend, dtype=dtype, max_tokens_per_batch=max_tokens)
    for n, s in registry.indexes.items():
        log.info("index %r: %d documents, version %s", n, len(s.current.index), s.current.version)
    limits = Limits(max_texts=max_texts, max_chars=max_chars, max_body_bytes=max_body, timeout_s=timeout)
    app = create_app(registry, limits, api_key=api_key)
    run(app, host, port, verbose=logging.getLogger().getEffectiveLevel() <= logging.DEBUG, sock=sock)
