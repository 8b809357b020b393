"""Embedding stores: a directory with ``embeddings.npy``, ``ids.txt`` and ``manifest.json``.

``embeddings.npy`` is a plain float32 .npy file, so ``np.load(..., mmap_mode='r')`` maps
it without reading it. ``ids.txt`` holds one id per line, in row order. ``manifest.json``
(format ``simkit-embeddings``, versioned) says how many vectors there are, their dimension,
how many texts were truncated, and records the pipeline that made them; ``pipeline/`` holds
that :class:`~simkit.pipeline.Pipeline` (model reference, pooling, transforms), so anything
built from the store encodes queries exactly like it.

A *sharded* store (written by the engines in :mod:`simkit.engines`, format_version 2) keeps
its vectors in ``shards/part-NNNNN.npy`` with the ids beside them in ``part-NNNNN.ids``;
``manifest.json`` lists the shards in row order with their counts and sha256 checksums, and
the inputs they came from. Row order: the inputs in the order given, and within an input the
records in file order; shard ``k`` holds the rows that follow shard ``k - 1``'s.

Both layouts load with :meth:`EmbeddingStore.load`, memory-mapped. ``store.embeddings`` is
the ``np.memmap`` of a single-file store, and a :class:`ShardedArray` (row slicing, ``shape``,
``np.asarray``) of a sharded one; :meth:`EmbeddingStore.iter_chunks` streams either, never
holding more than one chunk of one shard.

>>> store = EmbeddingStore.load("emb/")      # doctest: +SKIP
>>> store.embeddings.shape, len(store.ids)   # ((10000, 768), 10000)
>>> for start, X in store.iter_chunks(65536): ...   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import FormatError, InputError, no_file
from .fsutil import load_npy, load_versioned, os_error, read_config, write_json

if TYPE_CHECKING:
    from .pipeline import Pipeline

FORMAT = "simkit-embeddings"
FORMAT_VERSION = 2  # 1: embeddings.npy + ids.txt; 2: also the sharded layout (shards/)
SHARDS_DIR = "shards"


class ShardedArray:
    """The rows of several memory-mapped ``(n_i, d)`` shards as one read-only ``(n, d)`` array.

    Indexing with a row slice, an int or an array of rows reads only the shards it touches;
    ``np.asarray`` concatenates everything (it loads the whole store: stream with
    :meth:`EmbeddingStore.iter_chunks` instead).
    """

    def __init__(self, parts: list[np.ndarray], dim: int):
        self.parts = parts
        self.offsets = np.cumsum([0, *(len(p) for p in parts)])
        self.shape = (int(self.offsets[-1]), int(dim))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        X = self[:]
        return X if dtype is None else X.astype(dtype, copy=False)

    def __getitem__(self, key):
        rows, cols = (key if isinstance(key, tuple) else (key, slice(None)))
        if isinstance(rows, (int, np.integer)):
            r = int(rows) + (self.shape[0] if rows < 0 else 0)
            if not 0 <= r < self.shape[0]:
                raise IndexError(f"row {rows} out of range for {self.shape[0]} rows")
            k = int(np.searchsorted(self.offsets, r, side="right")) - 1
            return np.asarray(self.parts[k][r - self.offsets[k]])[cols]
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.shape[0])
            if step == 1:
                out = [np.asarray(p[max(start - a, 0): max(min(stop, b) - a, 0)])
                       for p, a, b in zip(self.parts, self.offsets[:-1], self.offsets[1:])
                       if start < b and stop > a]
                X = np.concatenate(out) if out else np.empty((0, self.shape[1]), np.float32)
                self._drop_pages()
                return X[:, cols]
            rows = np.arange(start, stop, step)
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + self.shape[0], rows)
        k = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), self.shape[1]), np.float32)
        for shard in np.unique(k):
            sel = k == shard
            out[sel] = self.parts[shard][rows[sel] - self.offsets[shard]]
            _drop_pages(self.parts[shard])  # a sample touches every page; keep the copy only
        return out[:, cols]

    def _drop_pages(self) -> None:
        for p in self.parts:
            _drop_pages(p)


@dataclasses.dataclass
class EmbeddingStore:
    embeddings: np.ndarray
    ids: list[str]
    manifest: dict
    pipeline: Pipeline | None = None
    path: Path | None = None  # the version directory the files were read from

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> EmbeddingStore:
        """Load the current version of an embedding directory (all files of that one version)."""
        return load_versioned(path, lambda version: cls._load(version, mmap))

    @classmethod
    def _load(cls, path: Path, mmap: bool) -> EmbeddingStore:
        manifest = read_config(path, FORMAT, FORMAT_VERSION, filename="manifest.json")
        if "shards" in manifest:
            return cls._load_sharded(path, manifest, mmap)
        emb_file, ids_file = path / "embeddings.npy", path / "ids.txt"
        for f in (emb_file, ids_file):
            if not f.is_file():
                raise FormatError(f"{f}: not found; the embedding directory {path} is incomplete")
        emb = _load_npy(emb_file, mmap)
        ids = read_ids(ids_file)
        if len(ids) != emb.shape[0]:
            raise FormatError(f"{ids_file}: {len(ids)} ids for {emb.shape[0]} vectors in {emb_file}")
        count = manifest.get("count")
        if count is not None and (type(count) is not int or count != emb.shape[0]):
            raise FormatError(f"{path / 'manifest.json'}: count {count!r} but {emb.shape[0]} vectors")
        return cls(emb, ids, manifest, _stored_pipeline(path, manifest, emb.shape[1]), path)

    @classmethod
    def _load_sharded(cls, path: Path, manifest: dict, mmap: bool) -> EmbeddingStore:
        where = path / "manifest.json"
        shards, dim = manifest.get("shards"), manifest.get("dim")
        if not isinstance(shards, list) or not isinstance(dim, int):
            raise FormatError(f"{where}: 'shards' must be a list and 'dim' an int")
        parts, ids = [], []
        for s in shards:
            if not isinstance(s, dict) or not isinstance(s.get("name"), str) or "/" in s["name"] \
                    or s["name"].startswith("."):
                raise FormatError(f"{where}: bad shard entry {s!r}")
            emb_file, ids_file = shard_files(path, s["name"])
            emb = _load_npy(emb_file, mmap)
            if emb.shape != (s.get("count"), dim):
                raise FormatError(f"{emb_file}: {emb.shape[0]} x {emb.shape[1]} vectors, but {where} says "
                                  f"{s.get('count')} x {dim}")
            shard_ids = read_ids(ids_file)
            if len(shard_ids) != emb.shape[0]:
                raise FormatError(f"{ids_file}: {len(shard_ids)} ids for {emb.shape[0]} vectors in {emb_file}")
            parts.append(emb)
            ids.extend(shard_ids)
        if manifest.get("count") != len(ids):
            raise FormatError(f"{where}: count {manifest.get('count')} but the shards hold {len(ids)} vectors")
        store = cls(ShardedArray(parts, dim), ids, manifest, _stored_pipeline(path, manifest, dim), path)
        return store

    @property
    def sharded(self) -> bool:
        return isinstance(self.embeddings, ShardedArray)

    def iter_chunks(self, chunk_size: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, vectors)`` in row order: at most ``chunk_size`` rows of one shard
        at a time (``None``: whole shards; a single-file store is one shard), read from the
        memory map only when yielded."""
        if chunk_size is not None and chunk_size < 1:
            raise InputError(f"chunk_size={chunk_size}; expected a positive integer")
        parts = self.embeddings.parts if self.sharded else [self.embeddings]
        start = 0
        for part in parts:
            step = chunk_size or max(len(part), 1)
            for a in range(0, len(part), step):
                yield start + a, np.asarray(part[a: a + step])
                _drop_pages(part)
            start += len(part)

    def release(self) -> None:
        """Drop the memory-mapped pages this process has read (they stay in the OS page
        cache), so that its resident memory does not grow with the store it streamed."""
        for part in (self.embeddings.parts if self.sharded else [self.embeddings]):
            _drop_pages(part)

    def locate(self, row: int) -> tuple[Path | None, int]:
        """The file that holds ``row``, and the row's number in that file (for error messages)."""
        if not self.sharded:
            return (self.path / "embeddings.npy" if self.path else None), row
        arr = self.embeddings
        k = int(np.searchsorted(arr.offsets, row, side="right")) - 1
        k = min(k, len(arr.parts) - 1)
        name = self.manifest["shards"][k]["name"]
        return (shard_files(self.path, name)[0] if self.path else Path(name)), row - int(arr.offsets[k])

    @staticmethod
    def write(path: Path, embeddings: np.ndarray, ids: list[str], manifest: dict,
              pipeline: Pipeline | None = None) -> None:
        """Write the store's files into ``path`` (an :func:`~simkit.fsutil.atomic_dir`)."""
        path = Path(path)
        np.save(path / "embeddings.npy", np.ascontiguousarray(embeddings, dtype=np.float32))
        write_ids(path / "ids.txt", ids)
        write_manifest(path, manifest, embeddings.shape, pipeline)


def _drop_pages(arr) -> None:
    """``madvise(MADV_DONTNEED)`` on a read-only memory map: the pages leave this process's
    resident set and are read again from the file if touched (no data is lost)."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None and getattr(arr, "mode", None) == "r" and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def _load_npy(file: Path, mmap: bool) -> np.ndarray:
    if not file.is_file():
        raise FormatError(f"{file}: not found; the embedding directory {file.parent} is incomplete")
    emb = load_npy(file, mmap=mmap)
    if emb.ndim != 2 or emb.dtype != np.float32:
        raise FormatError(f"{file}: expected a 2-D float32 array, found {emb.dtype} {emb.shape}")
    return emb


def shard_files(path: Path, name: str) -> tuple[Path, Path]:
    """``(vectors, ids)`` files of shard ``name`` in the store directory ``path``."""
    return Path(path) / SHARDS_DIR / f"{name}.npy", Path(path) / SHARDS_DIR / f"{name}.ids"


def file_sha256(file: str | os.PathLike, block: int = 1 << 22) -> str:
    """``sha256:<hex>`` of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _stored_pipeline(path: Path, manifest: dict, dim: int) -> Pipeline | None:
    """The store's pipeline: ``pipeline/``, or rebuilt from a simkit 0.1 manifest.

    A 0.1 store made by ``whiten apply`` recorded its transform only as a path outside the
    store; that path is not followed, so such a store has no pipeline (vectors only).
    """
    from .pipeline import Pipeline

    if (path / "pipeline").exists():
        pipe = Pipeline.load(path / "pipeline")
        if pipe.dim not in (None, dim):
            raise FormatError(f"{path / 'pipeline'}: makes {pipe.dim}-dim vectors, but "
                              f"{path / 'embeddings.npy'} holds {dim}-dim ones")
        return pipe
    if manifest.get("transforms") or manifest.get("transform"):
        return None
    return Pipeline.from_legacy(manifest)


def read_ids(file: Path) -> list[str]:
    """One id a line, in row order; bad UTF-8 or a missing file is an error naming the file."""
    try:
        raw = Path(file).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise no_file(file) from None
    except OSError as e:
        raise os_error(e, file, "read") from None
    try:
        ids = raw.decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise FormatError(f"{file}:{line}: invalid UTF-8 at byte {e.start}; ids are UTF-8 text, one a line") from None
    if ids and ids[-1] == "":
        ids.pop()
    return [i[:-1] if i.endswith("\r") else i for i in ids]


def write_ids(file: Path, ids: list[str]) -> None:
    for i in ids:
        if "\n" in i or "\r" in i:
            raise FormatError(f"id {i!r} contains a newline; ids must be single-line strings")
    Path(file).write_text("".join(i + "\n" for i in ids), encoding="utf-8")


def write_manifest(path: Path, manifest: dict, shape: tuple[int, int],
                   pipeline: Pipeline | None = None) -> None:
    """``manifest.json`` (and ``pipeline/`` when the vectors have a pipeline) into ``path``."""
    from . import __version__

    if pipeline is not None:
        pipeline.save_into(Path(path) / "pipeline")
    write_json(
        Path(path) / "manifest.json",
        {
            **manifest,
            "format": FORMAT,
            # Single-file stores stay version 1, so simkit 0.1 still reads them.
            "format_version": 2 if "shards" in manifest else 1,
            "simkit_version": __version__,
            "count": int(shape[0]),
            "dim": int(shape[1]),
            "pipeline": pipeline.to_dict() if pipeline is not None else None,
        },
    )
