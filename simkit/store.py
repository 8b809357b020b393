"""Embedding stores: a directory with ``embeddings.npy``, ``ids.txt`` and ``manifest.json``.

``embeddings.npy`` is a plain float32 .npy file, so ``np.load(..., mmap_mode='r')`` maps
it without reading it. ``ids.txt`` holds one id per line, in row order. ``manifest.json``
(format ``simkit-embeddings``, versioned) says which model, pooling and dtype made the
vectors, how many there are, their dimension, and how many texts were truncated.

>>> store = EmbeddingStore.load("emb/")      # doctest: +SKIP
>>> store.embeddings.shape, len(store.ids)   # ((10000, 768), 10000)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .errors import FormatError
from .fsutil import load_npy, load_versioned, os_error, read_config, write_json

FORMAT = "simkit-embeddings"
FORMAT_VERSION = 1


@dataclasses.dataclass
class EmbeddingStore:
    embeddings: np.ndarray
    ids: list[str]
    manifest: dict
    path: Path | None = None  # the version directory the files were read from

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> EmbeddingStore:
        """Load the current version of an embedding directory (all files of that one version)."""
        return load_versioned(path, lambda version: cls._load(version, mmap))

    @classmethod
    def _load(cls, path: Path, mmap: bool) -> EmbeddingStore:
        manifest = read_config(path, FORMAT, FORMAT_VERSION, filename="manifest.json")
        emb_file, ids_file = path / "embeddings.npy", path / "ids.txt"
        for f in (emb_file, ids_file):
            if not f.is_file():
                raise FormatError(f"{f}: not found; the embedding directory {path} is incomplete")
        emb = load_npy(emb_file, mmap=mmap)
        if emb.ndim != 2 or emb.dtype != np.float32:
            raise FormatError(f"{emb_file}: expected a 2-D float32 array, found {emb.dtype} {emb.shape}")
        try:
            raw = ids_file.read_bytes()
        except OSError as e:
            raise os_error(e, ids_file, "read") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise FormatError(f"{ids_file}:{line}: invalid UTF-8 at byte {e.start}") from None
        ids = text.split("\n")
        if ids and ids[-1] == "":
            ids.pop()
        if len(ids) != emb.shape[0]:
            raise FormatError(f"{ids_file}: {len(ids)} ids for {emb.shape[0]} vectors in {emb_file}")
        count = manifest.get("count")
        if count is not None and (type(count) is not int or count != emb.shape[0]):
            raise FormatError(f"{path / 'manifest.json'}: count {count!r} but {emb.shape[0]} vectors")
        return cls(emb, ids, manifest, path)

    @staticmethod
    def write(path: Path, embeddings: np.ndarray, ids: list[str], manifest: dict) -> None:
        """Write the three files into ``path`` (an :func:`~simkit.fsutil.atomic_dir`)."""
        path = Path(path)
        np.save(path / "embeddings.npy", np.ascontiguousarray(embeddings, dtype=np.float32))
        write_ids(path / "ids.txt", ids)
        write_manifest(path, manifest, embeddings.shape)


def write_ids(file: Path, ids: list[str]) -> None:
    for i in ids:
        if "\n" in i or "\r" in i:
            raise FormatError(f"id {i!r} contains a newline; ids must be single-line strings")
    Path(file).write_text("".join(i + "\n" for i in ids), encoding="utf-8")


def write_manifest(path: Path, manifest: dict, shape: tuple[int, int]) -> None:
    from . import __version__

    write_json(
        Path(path) / "manifest.json",
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "simkit_version": __version__,
            "count": int(shape[0]),
            "dim": int(shape[1]),
            **manifest,
        },
    )
