"""Embedding stores: a directory with ``embeddings.npy``, ``ids.txt`` and ``manifest.json``.

``embeddings.npy`` is a plain float32 .npy file, so ``np.load(..., mmap_mode='r')`` maps
it without reading it. ``ids.txt`` holds one id per line, in row order. ``manifest.json``
(format ``simkit-embeddings``, versioned) says how many vectors there are, their dimension,
how many texts were truncated, and records the pipeline that made them; ``pipeline/`` holds
that :class:`~simkit.pipeline.Pipeline` (model reference, pooling, transforms), so anything
built from the store encodes queries exactly like it.

>>> store = EmbeddingStore.load("emb/")      # doctest: +SKIP
>>> store.embeddings.shape, len(store.ids)   # ((10000, 768), 10000)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import FormatError, InputError
from .fsutil import load_npy, load_versioned, os_error, read_config, write_json

if TYPE_CHECKING:
    from .pipeline import Pipeline

FORMAT = "simkit-embeddings"
FORMAT_VERSION = 1


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
        emb_file, ids_file = path / "embeddings.npy", path / "ids.txt"
        for f in (emb_file, ids_file):
            if not f.is_file():
                raise FormatError(f"{f}: not found; the embedding directory {path} is incomplete")
        emb = load_npy(emb_file, mmap=mmap)
        if emb.ndim != 2 or emb.dtype != np.float32:
            raise FormatError(f"{emb_file}: expected a 2-D float32 array, found {emb.dtype} {emb.shape}")
        ids = read_ids(ids_file)
        if len(ids) != emb.shape[0]:
            raise FormatError(f"{ids_file}: {len(ids)} ids for {emb.shape[0]} vectors in {emb_file}")
        count = manifest.get("count")
        if count is not None and (type(count) is not int or count != emb.shape[0]):
            raise FormatError(f"{path / 'manifest.json'}: count {count!r} but {emb.shape[0]} vectors")
        return cls(emb, ids, manifest, _stored_pipeline(path, manifest, emb.shape[1]), path)

    @staticmethod
    def write(path: Path, embeddings: np.ndarray, ids: list[str], manifest: dict,
              pipeline: Pipeline | None = None) -> None:
        """Write the store's files into ``path`` (an :func:`~simkit.fsutil.atomic_dir`)."""
        path = Path(path)
        np.save(path / "embeddings.npy", np.ascontiguousarray(embeddings, dtype=np.float32))
        write_ids(path / "ids.txt", ids)
        write_manifest(path, manifest, embeddings.shape, pipeline)


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
    except FileNotFoundError:
        raise InputError(f"{file}: no such file") from None
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
            "format_version": FORMAT_VERSION,
            "simkit_version": __version__,
            "count": int(shape[0]),
            "dim": int(shape[1]),
            "pipeline": pipeline.to_dict() if pipeline is not None else None,
        },
    )
