"""``simkit index``: build, query, grow and describe vector indexes."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import (
    FORMATS,
    MODEL_HELP,
    THREADS_HELP,
    choice,
    echo_json,
    handle_errors,
    make_pipeline,
    progress_enabled,
    refuse_existing,
    sub_app,
    usage_error,
)

PRESET_HELP = "flat (exact), ivf, hnsw, ivfpq, or lsh (SimHash + re-rank). [default: flat]"
BUILD_HELP = """Build an index from an embedding dir, a corpus file, or bare vectors.

INPUT is an embedding dir (simkit encode / whiten apply: text queries are then encoded by
the pipeline that made it), a corpus file (.txt .jsonl .tsv .csv, encoded with --model),
or vectors from elsewhere: FILE.npy with --ids FILE, or a dir holding only embeddings.npy
and ids.txt (such an index answers vector queries; text queries need --model).

\b
Examples:
  simkit index build emb/ --preset hnsw -o idx/
  simkit index build emb/ --transform white/ -o idx/     (whitening inside the index)
  simkit index build vecs.npy --ids ids.txt --texts faq.txt -o idx/
"""
QUERY_HELP = """Query an index by text, by a file of texts, or by vectors.

Text is encoded by the index's own pipeline (model, pooling, transforms); --model only
points at a moved copy of the same model (other weights are refused). Vectors (--vectors
FILE.npy) are in the index's input space. One JSON line per query on stdout:
{"query": ..., "results": [{"id", "score", "text", "metadata"}, ...]}

\b
Example:  simkit index query idx/ "花呗怎么还款" -k 5
"""
ADD_HELP = """Add the documents of an embedding dir or corpus file to an index.

A corpus is encoded by the index's pipeline; an embedding dir must come from the same
pipeline. The index is locked while it changes and saved as a new version.

\b
Example:  simkit index add idx/ more.jsonl
"""


def register(app: typer.Typer) -> None:
    sub = sub_app("Build, query, grow and describe FAISS / LSH indexes.")
    sub.command("build", help=BUILD_HELP)(handle_errors(build))
    sub.command("query", help=QUERY_HELP)(handle_errors(query))
    sub.command("add", help=ADD_HELP)(handle_errors(add))
    sub.command("info", help="Describe an index (kind, factory, metric, dim, count, pipeline). JSON.")(
        handle_errors(info))
    app.add_typer(sub, name="index")


def build(
    input: Path = typer.Argument(..., help="Embedding dir, corpus file, or vectors .npy."),
    output: Path = typer.Option(..., "--output", "-o", help="Index directory to write."),
    preset: str | None = typer.Option(None, "--preset", help=PRESET_HELP,
                                       parser=choice("flat", "ivf", "hnsw", "ivfpq", "lsh")),
    factory: str | None = typer.Option(None, "--factory", help="A FAISS factory string instead of --preset, "
                                       "e.g. 'IVF1024,PQ32'."),
    metric: str = typer.Option("cosine", "--metric", help="cosine, ip or l2 (lsh: cosine or ip).",
                               parser=choice("cosine", "ip", "l2")),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    transform: Path | None = typer.Option(None, "--transform", help="A saved transform dir (whiten / "
                                          "project fit) the index applies to corpus and queries."),
    ids: Path | None = typer.Option(None, "--ids", help="Vectors .npy: a file of ids, one a line."),
    texts: Path | None = typer.Option(None, "--texts", help="Corpus file giving the texts of the input's "
                                      "ids (same ids, same order)."),
    nbits: int = typer.Option(256, "--nbits", min=1, help="lsh: code length in bits."),
    lsh_mode: str = typer.Option("flat", "--lsh-mode", help="lsh: flat (scan all codes), ivf (scan the "
                                 "lists nearest the query) or multihash (bucket lookup).",
                                 parser=choice("flat", "ivf", "multihash")),
    fmt: str = typer.Option("auto", "--format", help="Corpus format.", parser=choice(*FORMATS)),
    text_field: str | None = typer.Option(None, "--text-field", help="JSON field / CSV column of the text."),
    id_field: str | None = typer.Option(None, "--id-field", help="JSON field / CSV column of the id."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Texts per forward pass."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it is an index."),
    chunk_size: int = typer.Option(65536, "--chunk-size", min=1, help="Embedding dir: vectors added at once."),
    train_size: int | None = typer.Option(None, "--train-size", min=1, help="Embedding dir: IVF / PQ / LSH "
                                          "training sample. [default: all rows up to 65536, else 64 per list]"),
    on_disk: bool = typer.Option(False, "--on-disk", help="Embedding dir, IVF: merge the inverted lists on "
                                 "disk (index.ivfdata), for indexes larger than memory."),
) -> None:
    import shutil
    import tempfile
    import time

    from simkit.index.build import build_index

    refuse_existing(output, overwrite)
    t0 = time.perf_counter()
    chain = _load_transform(transform)
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{output.name}.ondisk-", dir=output.parent) if on_disk else None
    try:
        index = build_index(input, preset=preset, factory=factory, metric=metric, transform=chain, nbits=nbits,
                            lsh_mode=lsh_mode, pipeline=make_pipeline(model, threads) if model else None,
                            ids=ids, texts=texts, format=fmt, text_field=text_field, id_field=id_field,
                            batch_size=batch_size, show_progress_bar=progress_enabled(), chunk_size=chunk_size,
                            train_size=train_size, on_disk=scratch)
        index.save(output, overwrite=overwrite)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    echo_json({"output": str(output), "count": len(index), "dim": index.dim_, "dim_in": index.dim_in_,
               "factory": getattr(index, "factory_", None) or f"SimHash{nbits}+{lsh_mode}", "metric": metric,
               "on_disk": on_disk, "pipeline": index.model_ref_, "seconds": round(time.perf_counter() - t0, 3)})


def _load_transform(path: Path | None):
    if path is None:
        return None
    from simkit.transforms import load_transform

    return load_transform(path)


def query(
    index: Path = typer.Argument(..., help="Index directory."),
    text: str | None = typer.Argument(None, help="Query text."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="Hits per query."),
    queries: Path | None = typer.Option(None, "--queries", help="File of query texts (.txt .jsonl .tsv .csv)."),
    vectors: Path | None = typer.Option(None, "--vectors", help="Query vectors: a (n, dim) .npy file."),
    model: str | None = typer.Option(None, "--model", "-m", help="Where the index's model is now, if it moved "
                                     "(its weights must match)."),
    nprobe: int | None = typer.Option(None, "--nprobe", min=1, help="IVF lists to probe (FAISS IVF, LSH ivf)."),
    ef_search: int | None = typer.Option(None, "--ef-search", min=1, help="HNSW search breadth (efSearch)."),
    fmt: str = typer.Option("auto", "--format", help="--queries format.", parser=choice(*FORMATS)),
    text_field: str | None = typer.Option(None, "--text-field", help="JSON field / CSV column of the text."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Texts per forward pass."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    mmap: bool = typer.Option(True, "--mmap/--no-mmap", help="Memory-map the index files where FAISS allows."),
) -> None:
    from simkit.index import load_index, search_inputs
    from simkit.threads import configure_threads

    if sum(x is not None for x in (text, queries, vectors)) != 1:
        raise usage_error("give exactly one of: a query TEXT, --queries FILE, --vectors FILE.npy")
    idx = load_index(index, mmap=mmap)
    params = {k: v for k, v in (("nprobe", nprobe), ("efSearch", ef_search)) if v is not None}
    configure_threads(threads)
    for row in search_inputs(idx, text=text, queries=queries, vectors=vectors, top_k=top_k, model=model,
                             num_threads=threads, format=fmt, text_field=text_field, batch_size=batch_size,
                             **params):
        echo_json(row, pretty=False)


def add(
    index: Path = typer.Argument(..., help="Index directory (a new version is saved)."),
    input: Path = typer.Argument(..., help="Embedding dir (simkit encode) or corpus file."),
    texts: Path | None = typer.Option(None, "--texts", help="Corpus file giving the texts of an embedding "
                                      "dir's ids."),
    upsert: bool = typer.Option(False, "--upsert", help="Replace documents whose id is already in the index."),
    fmt: str = typer.Option("auto", "--format", help="Corpus format.", parser=choice(*FORMATS)),
    text_field: str | None = typer.Option(None, "--text-field", help="JSON field / CSV column of the text."),
    id_field: str | None = typer.Option(None, "--id-field", help="JSON field / CSV column of the id."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Texts per forward pass."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    from simkit.index import add_input

    echo_json({"index": str(index), **add_input(index, input, texts=texts, upsert=upsert, format=fmt,
                                                text_field=text_field, id_field=id_field, batch_size=batch_size,
                                                num_threads=threads, show_progress_bar=progress_enabled())})


def info(index: Path = typer.Argument(..., help="Index directory.")) -> None:
    from simkit.index import describe_index

    echo_json({"index": str(index), **describe_index(index)})
