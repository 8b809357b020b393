"""Embedding stores from corpora, and transforms fitted on / applied to stores, in chunks.

What ``simkit encode``, ``whiten fit`` / ``project fit`` and ``whiten apply`` do, as library
calls: a corpus larger than memory is streamed, vectors are written to a memory-mapped
``.npy``, and every store records the :class:`~simkit.pipeline.Pipeline` that made it.

>>> encode_corpus("faq.txt", "emb/", Pipeline("my-model"))           # doctest: +SKIP
>>> w = fit_store("emb/", Whitening(256), streaming=True)             # doctest: +SKIP
>>> apply_transform("emb/", w, "emb256/")   # its pipeline: model -> whitening
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import CorpusFormat, CorpusStats, read_corpus
from .errors import InputError, ParameterError
from .fsutil import atomic_dir, reserve_space
from .pipeline import Pipeline
from .store import FORMAT as STORE_FORMAT
from .store import EmbeddingStore, write_manifest


def _bar(total: int, desc: str, enabled: bool | None, unit: str = "vec"):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, leave=False)


def _batches(it, size: int) -> Iterator[list]:
    buf = []
    for x in it:
        buf.append(x)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def encode_corpus(input: str | os.PathLike, output: str | os.PathLike, pipeline: Pipeline | None = None,
                  *, format: CorpusFormat = "auto", text_field: str | None = None,
                  id_field: str | None = None, batch_size: int = 32, chunk_size: int = 10000,
                  overwrite: bool = False, show_progress_bar: bool | None = None) -> dict:
    """Encode a corpus file into an embedding store; returns a JSON-able summary.

    The file is read twice as a stream (check and count, then encode), so only
    ``chunk_size`` texts are in memory at once; the bar advances per batch.
    """
    input, output = Path(input), Path(output)
    if batch_size < 1 or chunk_size < 1:
        raise InputError(f"batch_size={batch_size}, chunk_size={chunk_size}; expected positive integers")
    pipeline = pipeline if pipeline is not None else Pipeline()
    t0 = time.perf_counter()
    stats = CorpusStats()
    n = sum(1 for _ in read_corpus(input, format, text_field, id_field, stats))  # validate + count
    enc = pipeline.encoder
    dim = pipeline.dim
    truncated = 0
    with atomic_dir(output, overwrite=overwrite, kind=STORE_FORMAT) as tmp:
        emb = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, dim))
        reserve_space(tmp / "embeddings.npy")  # a memmap write to a full disk would be a SIGBUS
        row = 0
        with open(tmp / "ids.txt", "w", encoding="utf-8") as ids_out, \
                _bar(n, "encode", show_progress_bar, "sent") as bar:
            for chunk in _batches(read_corpus(input, format, text_field, id_field), chunk_size):
                for r in chunk:
                    if "\n" in r.id or "\r" in r.id:
                        raise InputError(f"{input}:{r.line}: id {r.id!r} contains a newline")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the count goes into the summary instead
                    emb[row: row + len(chunk)] = pipeline.encode([r.text for r in chunk], batch_size=batch_size,
                                                                  progress_bar=bar)
                truncated += enc.last_encode_info_["truncated"]
                row += len(chunk)
                ids_out.writelines(r.id + "\n" for r in chunk)
        if row != n:
            raise InputError(f"{input} changed while it was being encoded ({n} records, then {row})")
        emb.flush()
        del emb
        seconds = time.perf_counter() - t0
        summary = {**enc.model_card, "normalize_embeddings": pipeline.normalize_embeddings, "dim": dim,
                   "input": str(input), "truncated": truncated,
                   "empty": stats.empty, "blank_lines_skipped": stats.blank, "seconds": round(seconds, 3)}
        write_manifest(tmp, summary, (n, dim), pipeline)
    return {"output": str(output), "count": n, **summary, "pipeline": pipeline.to_dict(),
            "sentences_per_second": round(n / max(seconds, 1e-9), 1)}


@contextlib.contextmanager
def _rows(store: EmbeddingStore, a: int, chunk: np.ndarray):
    """Yield ``chunk`` (rows ``a..``); errors name the file and, for NaN/inf, the row in that file."""
    b = a + len(chunk)
    try:
        yield chunk
    except ParameterError:  # a bad eps / n_components: about the option, not about this file
        raise
    except InputError as e:
        bad = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
        if len(bad):
            where, row = store.locate(a + int(bad[0]))
            raise InputError(f"{where}: row {row} contains NaN or inf "
                             f"({len(bad)} bad rows in rows {a}..{b - 1})") from None
        raise InputError(f"{store.locate(a)[0]}: {e}") from None


def _chunks(store: EmbeddingStore, size: int, desc: str,
            show_progress_bar: bool | None) -> Iterator[tuple[int, np.ndarray]]:
    """``store.iter_chunks(size)`` (never across shards) with a progress bar."""
    with _bar(len(store.ids), desc, show_progress_bar) as bar:
        for start, chunk in store.iter_chunks(size):
            yield start, chunk
            bar.update(len(chunk))


def fit_store(store: str | os.PathLike | EmbeddingStore, estimator: Any, *, streaming: bool = False,
              chunk_size: int = 65536, show_progress_bar: bool | None = None) -> Any:
    """Fit ``estimator`` (Whitening, RandomProjection, ...) on a store's vectors; returns it.

    ``streaming`` calls ``partial_fit`` chunk by chunk, shard by shard in a sharded store
    (memory O(chunk + d^2)); otherwise ``fit`` sees the memory-mapped matrix once (a sharded
    store's shards are concatenated for it). Errors name the file and the bad row.
    """
    path, store = _open(store)
    emb = store.embeddings
    if streaming:
        if not hasattr(estimator, "partial_fit"):
            raise InputError(f"{type(estimator).__name__} has no partial_fit; fit it without streaming")
        for a, chunk in _chunks(store, chunk_size, "fit", show_progress_bar):
            with _rows(store, a, chunk):
                estimator.partial_fit(chunk)
        with _rows(store, 0, emb[0:0]):
            getattr(estimator, "finalize", lambda: None)()
    else:
        X = emb[:] if store.sharded else emb
        with _rows(store, 0, X):
            estimator.fit(X)
    return estimator


def apply_transform(store: str | os.PathLike | EmbeddingStore, transform: Any, output: str | os.PathLike,
                    *, chunk_size: int = 65536, overwrite: bool = False, source: str | os.PathLike | None = None,
                    show_progress_bar: bool | None = None) -> dict:
    """Write a new store: ``transform`` applied to every vector of ``store``, chunk by chunk.

    The new store's pipeline is the old one followed by ``transform``, so a text query on
    anything built from it is encoded and transformed exactly like these vectors. ``source``
    (where the transform was saved) is recorded in the manifest for people; it is never read.
    A sharded store gives a sharded store (the same shards, transformed one chunk at a time).
    """
    path, src = _open(store)
    output = Path(output)
    if output.resolve() == path.resolve():
        raise InputError(f"{output}: the output must not be the input directory")
    from .transforms import Normalize, describe, flatten

    n, d = src.embeddings.shape
    if d != transform.n_features_in_:
        raise InputError(f"{path / 'embeddings.npy'} holds {d}-dim vectors, but the transform "
                         f"expects {transform.n_features_in_}-dim input")
    k = transform.n_components_
    t0 = time.perf_counter()
    pipeline = src.pipeline.then(transform) if src.pipeline is not None else None
    with atomic_dir(output, overwrite=overwrite, kind=STORE_FORMAT) as tmp:
        if src.sharded:
            shards = _apply_sharded(src, transform, tmp, k, chunk_size, show_progress_bar)
        else:
            out = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, k))
            reserve_space(tmp / "embeddings.npy")  # a memmap write to a full disk would be a SIGBUS
            for a, chunk in _chunks(src, chunk_size, "apply", show_progress_bar):
                with _rows(src, a, chunk):
                    out[a: a + len(chunk)] = transform.transform(chunk)
            out.flush()
            del out
            shutil.copyfile(src.path / "ids.txt", tmp / "ids.txt")  # the version just read
        keep = {key: v for key, v in src.manifest.items()
                if key not in ("format", "format_version", "simkit_version", "count", "dim", "pipeline", "shards")}
        if src.sharded:
            keep["shards"] = shards
        record = {"path": str(Path(source).resolve()) if source else None, "steps": describe(transform)}
        write_manifest(tmp, {**keep, "source_embeddings": str(path), "transform": record,
                             "transforms": [*src.manifest.get("transforms", []), record],
                             "normalize_embeddings": pipeline.normalize_embeddings if pipeline is not None
                             else isinstance(flatten(transform)[-1], Normalize)},
                       (n, k), pipeline)
    return {"output": str(output), "input": str(path), "count": n, "dim_in": d, "dim_out": k,
            "seconds": round(time.perf_counter() - t0, 3),
            "pipeline": pipeline.to_dict() if pipeline is not None else None}


def _apply_sharded(src: EmbeddingStore, transform: Any, tmp: Path, k: int, chunk_size: int,
                   show_progress_bar: bool | None) -> list[dict]:
    """Each shard of ``src`` transformed into the same shard of ``tmp``; the new shard list."""
    from .store import SHARDS_DIR, file_sha256, shard_files

    (tmp / SHARDS_DIR).mkdir()
    entries = src.manifest["shards"]
    outs = {}
    for a, chunk in _chunks(src, chunk_size, "apply", show_progress_bar):
        k_shard = int(np.searchsorted(src.embeddings.offsets, a, side="right")) - 1
        entry = entries[k_shard]
        if entry["name"] not in outs:
            for done in list(outs):  # shards come in order: the previous one is finished
                if outs[done] is not None:
                    outs[done].flush()
                    outs[done] = None
            outs[entry["name"]] = np.lib.format.open_memmap(shard_files(tmp, entry["name"])[0], mode="w+",
                                                             dtype=np.float32, shape=(entry["count"], k))
            reserve_space(shard_files(tmp, entry["name"])[0])  # a memmap write to a full disk: SIGBUS
        first = a - int(src.embeddings.offsets[k_shard])
        with _rows(src, a, chunk):
            outs[entry["name"]][first: first + len(chunk)] = transform.transform(chunk)
    new = []
    for entry in entries:
        emb_out, ids_out = shard_files(tmp, entry["name"])
        if outs.get(entry["name"]) is not None:
            outs[entry["name"]].flush()
            outs[entry["name"]] = None
        elif entry["name"] not in outs:  # an empty shard
            np.save(emb_out, np.empty((0, k), np.float32))
        shutil.copyfile(shard_files(src.path, entry["name"])[1], ids_out)
        new.append({**entry, "sha256": file_sha256(emb_out)})
    return new


def _open(store) -> tuple[Path, EmbeddingStore]:
    if isinstance(store, EmbeddingStore):
        return Path(store.path or "<in-memory store>"), store
    return Path(store), EmbeddingStore.load(store, mmap=True)
