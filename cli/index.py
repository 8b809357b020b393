"""``simkit index``: build, query, grow and describe vector indexes.

INPUT is an embedding directory written by ``simkit encode`` or a corpus file (.txt, .jsonl,
.tsv, .csv) that is encoded with --model. A corpus brings its texts into the index; an
embedding directory brings them with --texts CORPUS (ids must match, in order).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from simkit.errors import InputError

from .common import MODEL_HELP, echo_json, handle_errors, log, progress_enabled, refuse_existing

PRESET_HELP = "flat (exact), ivf, hnsw, ivfpq, or lsh (SimHash + re-rank). Default: flat."
QUERY_HELP = """Query an index: by text (encoded with the index's model and transform), by a file of
texts (--queries, .txt or .jsonl), or by vectors (--vectors FILE.npy, in the model's space).
One JSON line per query on stdout: {"query": ..., "results": [{"id", "score", "text", "metadata"}]}.

Example:  simkit index query idx/ "花呗怎么还款" -k 5
"""


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Build, query, grow and describe FAISS / LSH indexes.", no_args_is_help=True)
    sub.command("build", help="Build an index from an embedding dir or a corpus file.\n\n"
                "Example:  simkit index build emb/ --preset hnsw -o idx/")(handle_errors(build))
    sub.command("query", help=QUERY_HELP)(handle_errors(query))
    sub.command("add", help="Add the documents of an embedding dir or corpus file to an index (saved in place).")(handle_errors(add))
    sub.command("info", help="Describe an index: kind, factory, metric, dim, count, transform, model. JSON.")(handle_errors(info))
    app.add_typer(sub, name="index")


def _read_input(path: Path, model: str | None, ref: dict | None, fmt: str, text_field, id_field,
                texts_file: Path | None, batch_size: int):
    """(vectors, ids, texts, model reference) from an embedding dir or a corpus file."""
    import numpy as np

    from simkit.corpus import read_corpus

    if path.is_dir():
        from simkit.store import EmbeddingStore

        emb = EmbeddingStore.load(path)
        keys = ("model", "source", "backbone", "pooling", "max_seq_length", "dtype", "dim", "normalize_embeddings")
        new_ref = {k: emb.manifest[k] for k in keys if k in emb.manifest} or None
        if new_ref and new_ref.get("model") and Path(new_ref["model"]).exists():
            new_ref["model"] = str(Path(new_ref["model"]).resolve())
        if model:
            new_ref = {**(new_ref or {}), "model": _abs(model)}
        texts = None
        if texts_file is not None:
            recs = list(read_corpus(texts_file, fmt, text_field, id_field))
            if [r.id for r in recs] != emb.ids:
                raise InputError(f"{texts_file}: its {len(recs)} ids do not match the {len(emb.ids)} ids of {path} (same order needed)")
            texts = [r.text for r in recs]
        return np.asarray(emb.embeddings), emb.ids, texts, new_ref
    if texts_file is not None:
        raise InputError("--texts applies to an embedding directory; a corpus file brings its own texts")
    from simkit.encoder import Encoder

    recs = list(read_corpus(path, fmt, text_field, id_field))
    if model is None and ref and ref.get("model"):
        opts = {k: ref[k] for k in ("pooling", "max_seq_length", "dtype") if ref.get(k) is not None}
        enc = Encoder(ref["model"], **opts)
    else:
        enc = Encoder(_abs(model) if model else None)
    normalize = bool((ref or {}).get("normalize_embeddings", False))
    vecs = enc.encode([r.text for r in recs], batch_size=batch_size, show_progress_bar=progress_enabled(),
                      normalize_embeddings=normalize)
    return vecs, [r.id for r in recs], [r.text for r in recs], {**enc.model_card, "normalize_embeddings": normalize}


def _abs(model: str) -> str:
    """A local model dir as an absolute path, so the index works from any directory."""
    return str(Path(model).resolve()) if Path(model).exists() else model


def build(
    input: Path = typer.Argument(..., help="Embedding dir (simkit encode) or corpus file."),
    output: Path = typer.Option(..., "--output", "-o", help="Index directory (created atomically)."),
    preset: str | None = typer.Option(None, "--preset", help=PRESET_HELP),
    factory: str | None = typer.Option(None, "--factory", help="A FAISS factory string, e.g. 'IVF1024,PQ32' (instead of --preset)."),
    metric: str = typer.Option("cosine", "--metric", help="cosine, ip or l2 (lsh: cosine or ip)."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    transform: Path | None = typer.Option(None, "--transform", help="A saved transform dir (whitening / JL) applied to corpus and queries."),
    texts: Path | None = typer.Option(None, "--texts", help="Corpus file giving the texts of an embedding dir's ids."),
    nbits: int = typer.Option(256, "--nbits", help="lsh: code length in bits."),
    lsh_mode: str = typer.Option("flat", "--lsh-mode", help="lsh: flat (scan every code), ivf (scan the --nprobe lists "
                                 "nearest the query: sub-linear) or multihash (bucket lookup)."),
    fmt: str = typer.Option("auto", "--format", help="Corpus format: auto, txt, jsonl, tsv, csv."),
    text_field: str | None = typer.Option(None, "--text-field"),
    id_field: str | None = typer.Option(None, "--id-field"),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists."),
) -> None:
    from simkit.index import LSHIndex, VectorIndex

    refuse_existing(output, overwrite)
    if preset is not None and factory is not None:
        raise InputError("pass --preset or --factory, not both")
    if preset != "lsh" and lsh_mode != "flat":
        raise InputError(f"--lsh-mode {lsh_mode!r} applies to --preset lsh; got --preset {preset!r}")
    chain = None
    if transform is not None:
        from simkit.transforms import load_transform

        chain = load_transform(transform)
    t0 = time.perf_counter()
    vecs, ids, txts, ref = _read_input(input, model, None, fmt, text_field, id_field, texts, batch_size)
    if preset == "lsh":
        index = LSHIndex(nbits=nbits, metric=metric, mode=lsh_mode, transform=chain, model=ref)
    else:
        index = VectorIndex(factory, preset=preset, metric=metric, transform=chain, model=ref)
    index.add(vecs, ids, txts)
    index.save(output, overwrite=overwrite)
    echo_json({"output": str(output), "count": len(index), "dim": index.dim_, "dim_in": index.dim_in_,
               "factory": getattr(index, "factory_", None) or f"SimHash{nbits}+{lsh_mode}", "metric": metric,
               "seconds": round(time.perf_counter() - t0, 3)})


def query(
    index: Path = typer.Argument(..., help="Index directory."),
    text: str | None = typer.Argument(None, help="Query text."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1),
    queries: Path | None = typer.Option(None, "--queries", help="File of query texts (.txt or .jsonl)."),
    vectors: Path | None = typer.Option(None, "--vectors", help="Query vectors, a (n, dim) float .npy file."),
    model: str | None = typer.Option(None, "--model", "-m", help="Override the index's model reference."),
    nprobe: int | None = typer.Option(None, "--nprobe", min=1, help="IVF lists to probe (FAISS IVF, or LSH --lsh-mode ivf)."),
    ef_search: int | None = typer.Option(None, "--ef-search", min=1, help="HNSW search breadth."),
    fmt: str = typer.Option("auto", "--format", help="--queries format: auto, txt, jsonl, tsv, csv."),
    text_field: str | None = typer.Option(None, "--text-field"),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    mmap: bool = typer.Option(True, "--mmap/--no-mmap", help="Memory-map the index files where FAISS allows."),
) -> None:
    import numpy as np

    from simkit.index import load_index

    if sum(x is not None for x in (text, queries, vectors)) != 1:
        raise InputError("give exactly one of: a query TEXT, --queries FILE, --vectors FILE.npy")
    idx = load_index(index, mmap=mmap)
    params = {k: v for k, v in (("nprobe", nprobe), ("efSearch", ef_search)) if v is not None}
    if vectors is not None:
        try:
            q = np.load(vectors, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise InputError(f"{vectors}: not a readable .npy file ({e})") from None
        q = q[None, :] if q.ndim == 1 else q
        for i, hits in enumerate(idx.search(q, top_k=top_k, **params)):
            echo_json({"query": i, "results": hits}, pretty=False)
        return
    if queries is not None:
        from simkit.corpus import read_corpus

        recs = list(read_corpus(queries, fmt, text_field))
        qtexts, qids = [r.text for r in recs], [r.id for r in recs]
    else:
        qtexts, qids = [text], [None]
    enc = None
    if model is not None:
        from simkit.encoder import Encoder

        enc = Encoder(model)
    else:
        enc = idx.load_encoder()
    for qid, qt, hits in zip(qids, qtexts, idx.search_text(qtexts, top_k=top_k, encoder=enc, batch_size=batch_size, **params), strict=True):
        echo_json({"query": qt, **({"query_id": qid} if qid is not None else {}), "results": hits}, pretty=False)


def add(
    index: Path = typer.Argument(..., help="Index directory (rewritten atomically)."),
    input: Path = typer.Argument(..., help="Embedding dir (simkit encode) or corpus file."),
    texts: Path | None = typer.Option(None, "--texts", help="Corpus file giving the texts of an embedding dir's ids."),
    upsert: bool = typer.Option(False, "--upsert", help="Replace documents whose id is already in the index."),
    fmt: str = typer.Option("auto", "--format"),
    text_field: str | None = typer.Option(None, "--text-field"),
    id_field: str | None = typer.Option(None, "--id-field"),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
) -> None:
    from simkit.index import load_index

    idx = load_index(index)
    ref = idx.model_ref_
    vecs, ids, txts, new_ref = _read_input(input, None, ref, fmt, text_field, id_field, texts, batch_size)
    if ref and new_ref and ref.get("pooling") != new_ref.get("pooling"):
        log.warning("the index was built with pooling %r; %s has %r", ref.get("pooling"), input, new_ref.get("pooling"))
    from simkit.index.ops import add_to_index  # locked read-modify-write of the newest version

    echo_json({"index": str(index), **add_to_index(index, vecs, ids, txts, upsert=upsert)})


def info(index: Path = typer.Argument(..., help="Index directory.")) -> None:
    from simkit.fsutil import artifact_status, resolve_version
    from simkit.index import read_index_config

    cfg, version = read_index_config(index), resolve_version(index)
    files = {p.name: p.stat().st_size for p in sorted(version.iterdir()) if p.is_file()}
    echo_json({"index": str(index), **cfg, "files": files, "bytes": sum(files.values()), **artifact_status(index)})
