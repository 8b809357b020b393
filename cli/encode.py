"""``simkit encode``: a corpus file -> an embedding directory."""

from __future__ import annotations

from pathlib import Path

import click
import typer

from simkit.pooling import POOLINGS

from .common import (
    FORMATS,
    MODEL_HELP,
    THREADS_HELP,
    choice,
    echo_json,
    handle_errors,
    log,
    make_pipeline,
    progress_enabled,
    refuse_existing,
)


def register(app: typer.Typer) -> None:
    app.command("encode", help=ENCODE_HELP)(handle_errors(encode))


ENCODE_HELP = """Encode a corpus into an embedding dir: OUT/embeddings.npy, ids.txt, manifest.json,
and pipeline/ (the model, pooling and transforms that made the vectors).

INPUT is .txt (a line a text; an empty line is kept as an empty text so ids never
shift), .jsonl (an object a line; --text-field, --id-field) or .tsv/.csv (a header
row; --text-field names the column). Ids default to the line number. The file is
streamed twice (check and count, then encode), so a corpus larger than memory works.

Several INPUTs (files, directories, globs; .parquet too), --engine ray or --shard-size
write a sharded store (OUT/shards/part-NNNNN.npy + .ids, rows in input order) that is
resumable: re-running a killed job skips its complete shards. --engine ray runs the
shards on a Ray Data actor pool (pip install 'simkit[ray]'; --address auto joins a
running cluster, see the README).

\b
Example:  simkit encode faq.txt -o emb/     (then: simkit index build emb/ -o idx/)
          simkit encode 'corpus/*.jsonl' --engine ray --num-workers 8 -o emb/
"""


def encode(
    inputs: list[str] = typer.Argument(..., help="Corpus files (.txt, .jsonl, .tsv, .csv; .parquet for "
                                       "a sharded store), directories or globs."),
    output: Path = typer.Option(..., "--output", "-o", help="Embedding directory to write."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    pooling: str | None = typer.Option(None, "--pooling", "-p",
                                       help="[default: the model's]", parser=choice(*POOLINGS)),
    fmt: str = typer.Option("auto", "--format", help="auto: from the suffix; parquet too.", parser=choice(*FORMATS, "parquet")),
    text_field: str | None = typer.Option(None, "--text-field", help="JSON field / CSV column of the text "
                                          "[default: text]."),
    id_field: str | None = typer.Option(None, "--id-field", help="JSON field / CSV column of the id "
                                        "[default: id, else the line number]."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Texts per forward pass."),
    max_seq_length: int | None = typer.Option(None, "--max-seq-length", min=3, help="Token limit; longer "
                                              "texts are truncated and counted. [default: the model's]"),
    dtype: str = typer.Option("fp32", "--dtype", help="Compute dtype: fp32, bf16 (torch; faster on CPUs "
                              "with AVX-512 bf16 / AMX) or int8 (dynamic int8, CPU).",
                              parser=choice("fp32", "bf16", "int8")),
    backend: str = typer.Option("torch", "--backend", help="Runtime: torch, or onnx (ONNX Runtime; "
                                "--dtype fp32 or int8; needs simkit[onnx]).", parser=choice("torch", "onnx")),
    normalize: bool = typer.Option(False, "--normalize", help="L2-normalise the vectors (a Normalize step "
                                   "in the pipeline)."),
    chunk_size: int = typer.Option(10000, "--chunk-size", min=1, help="Texts held in memory at once."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    streams: int = typer.Option(1, "--streams", min=1,
                                help="Batches run side by side (CPU), each on --threads / --streams "
                                "threads: faster for small models on few cores."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it is an embedding dir."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (a Ray Data actor "
                               "pool; writes a sharded store).", parser=choice("local", "ray")),
    address: str | None = typer.Option(None, "--address", help="ray: the cluster (auto, ray://HOST:10001); "
                                       "[default: a running local Ray, else a new one]"),
    num_workers: int | None = typer.Option(None, "--num-workers", min=1, help="ray: actors, one pipeline each. "
                                           "[default: the cluster's CPUs / --threads]"),
    num_gpus: float = typer.Option(0, "--num-gpus-per-worker", min=0, help="ray: GPUs per actor (e.g. 1, or "
                                   "0.5 to share one)."),
    shard_size: int | None = typer.Option(None, "--shard-size", min=1, help="Records per shard; writes a "
                                          "sharded store. [default with --engine ray or several inputs: 10000]"),
) -> None:
    from simkit.engines import encode_inputs

    if streams > 1 and engine == "ray":
        raise click.UsageError("--streams is for --engine local; with ray, run more actors "
                               "(--num-workers) of fewer --threads")
    refuse_existing(output, overwrite)
    transform = None
    if normalize:
        from simkit.transforms import Chain, Normalize

        transform = Chain([Normalize()])
    pipeline = make_pipeline(model, threads, pooling=pooling, max_seq_length=max_seq_length, dtype=dtype,
                             backend=backend, transform=transform, num_streams=streams)
    summary = encode_inputs(inputs, output, pipeline, engine=engine, shard_size=shard_size, chunk_size=chunk_size,
                            format=fmt, text_field=text_field, id_field=id_field, batch_size=batch_size,
                            overwrite=overwrite, show_progress_bar=progress_enabled(), address=address,
                            num_workers=num_workers, num_cpus_per_worker=threads or 1,
                            num_gpus_per_worker=num_gpus)
    if summary["truncated"]:
        log.warning("%d of %d texts were longer than %d tokens and were truncated", summary["truncated"],
                    summary["count"], summary["max_seq_length"])
    echo_json(summary)
