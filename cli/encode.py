"""``simkit encode``: a corpus file -> an embedding directory."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import typer

from simkit.corpus import CorpusStats, read_corpus
from simkit.errors import InputError
from simkit.fsutil import atomic_dir, reserve_space
from simkit.pooling import POOLINGS
from simkit.store import write_manifest

from .common import MODEL_HELP, echo_json, handle_errors, log, progress_enabled, refuse_existing


def register(app: typer.Typer) -> None:
    app.command("encode", help=ENCODE_HELP)(handle_errors(encode))


ENCODE_HELP = """Encode a corpus into OUT/embeddings.npy, OUT/ids.txt and OUT/manifest.json.

INPUT is .txt (a line a text; an empty line is kept as an empty text so ids never shift),
.jsonl (one object a line; --text-field, --id-field) or .tsv/.csv (a header row; --text-field
names the column). Ids default to the line number. The file is read twice, as a stream: once
to check and count it, once to encode it, so a corpus larger than memory works.

Example:  simkit encode faq.txt --model my-model -o emb/   (then: simkit index build emb/ ...)
"""


def encode(
    input: Path = typer.Argument(..., help="Corpus file: .txt, .jsonl, .tsv or .csv."),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (created atomically)."),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    pooling: str | None = typer.Option(
        None, "--pooling", "-p", help=f"One of {', '.join(POOLINGS)}. Default: the model's."
    ),
    fmt: str = typer.Option("auto", "--format", help="auto (from the suffix), txt, jsonl, tsv or csv."),
    text_field: str | None = typer.Option(None, "--text-field", help="JSON field / CSV column of the text (default: text)."),
    id_field: str | None = typer.Option(None, "--id-field", help="JSON field / CSV column of the id (default: id, else the line number)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    max_seq_length: int | None = typer.Option(None, "--max-seq-length", help="Token limit (default: the model's); longer texts are truncated and counted."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, or bf16 (faster on CPUs with AMX)."),
    normalize: bool = typer.Option(False, "--normalize", help="L2-normalise the vectors."),
    chunk_size: int = typer.Option(10000, "--chunk-size", min=1, help="Texts held in memory at once."),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    from simkit.encoder import Encoder

    refuse_existing(output, overwrite)
    t0 = time.perf_counter()
    stats = CorpusStats()
    n = sum(1 for _ in read_corpus(input, fmt, text_field, id_field, stats))  # validate + count
    enc = Encoder(model, pooling=pooling, max_seq_length=max_seq_length, dtype=dtype, num_threads=threads)
    dim = enc.get_sentence_embedding_dimension()
    truncated = 0
    with atomic_dir(output, overwrite=overwrite, kind="simkit-embeddings") as tmp:
        emb = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, dim))
        reserve_space(tmp / "embeddings.npy")  # a memmap write to a full disk would be a SIGBUS
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="sent", desc="encode", disable=not progress_enabled())
        row = 0
        with open(tmp / "ids.txt", "w", encoding="utf-8") as ids_out:
            for chunk in _chunks(read_corpus(input, fmt, text_field, id_field), chunk_size):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the count goes into the summary instead
                    vecs = enc.encode(
                        [r.text for r in chunk],
                        batch_size=batch_size,
                        show_progress_bar=False,
                        normalize_embeddings=normalize,
                    )
                truncated += enc.last_encode_info_["truncated"]
                emb[row : row + len(chunk)] = vecs
                row += len(chunk)
                for r in chunk:
                    if "\n" in r.id or "\r" in r.id:
                        raise InputError(f"{input}:{r.line}: id {r.id!r} contains a newline")
                    ids_out.write(r.id + "\n")
                bar.update(len(chunk))
        bar.close()
        if row != n:
            raise InputError(f"{input} changed while it was being encoded ({n} records, then {row})")
        emb.flush()
        del emb
        seconds = time.perf_counter() - t0
        summary = {
            **enc.model_card,
            "input": str(input),
            "normalize_embeddings": normalize,
            "truncated": truncated,
            "empty": stats.empty,
            "blank_lines_skipped": stats.blank,
            "seconds": round(seconds, 3),
        }
        write_manifest(tmp, summary, (n, dim))
    if truncated:
        log.warning("%d of %d texts were longer than %d tokens and were truncated", truncated, n, enc.max_seq_length)
    echo_json({"output": str(output), "count": n, "dim": dim, **summary,
               "sentences_per_second": round(n / max(seconds, 1e-9), 1)})


def _chunks(it, size):
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf
