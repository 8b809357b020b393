"""Indexes from whatever holds the vectors: an embedding store, a corpus, or bare vectors.

``read_vectors`` turns an input into ``(vectors, ids, texts, pipeline)``:

- an embedding store (``simkit encode`` / ``whiten apply``): its vectors and the pipeline
  that made them, so text queries are encoded (and whitened) exactly like the corpus;
- a corpus file (.txt / .jsonl / .tsv / .csv): encoded with the pipeline given;
- vectors from elsewhere: ``vectors.npy`` (with ``ids=`` a file of one id a line), or a
  directory holding only ``embeddings.npy`` + ``ids.txt``. They have no pipeline unless one
  is given, and an index built from them refuses text queries.

>>> index = build_index("emb/", preset="hnsw")                        # doctest: +SKIP
>>> index = build_index("vecs.npy", ids="ids.txt", texts="faq.txt")    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import CorpusFormat, read_corpus
from ..errors import InputError, no_file
from ..fsutil import resolve_version
from ..pipeline import Pipeline
from .base import BaseIndex

PRESETS = ("flat", "ivf", "hnsw", "ivfpq", "lsh")


@dataclasses.dataclass
class Vectors:
    """What an index is built from."""

    vectors: np.ndarray
    ids: list
    texts: list[str] | None
    pipeline: Pipeline | None


def read_vectors(input: str | os.PathLike, *, pipeline: Pipeline | None = None,
                 ids: str | os.PathLike | None = None, texts: str | os.PathLike | None = None,
                 format: CorpusFormat = "auto", text_field: str | None = None,
                 id_field: str | None = None, batch_size: int = 32,
                 show_progress_bar: bool | None = None) -> Vectors:
    """Vectors, ids, texts and pipeline of ``input`` (see the module docstring).

    ``pipeline`` encodes a corpus; for a store it must be the store's own (same weights and
    transforms); for bare vectors it is attached as given. ``texts`` is a corpus file whose
    ids match the input's, in order.
    """
    path = Path(input)
    version = resolve_version(path) if path.is_dir() else path  # a versioned store keeps its files there
    if path.is_dir() and (version / "manifest.json").exists():
        from ..store import EmbeddingStore

        store = EmbeddingStore.load(path)
        own = store.pipeline
        if pipeline is not None and own is not None:
            check_same_pipeline(own, pipeline, f"the embedding store {path}")
        vecs = Vectors(np.asarray(store.embeddings), store.ids, None, own if own is not None else pipeline)
    elif path.suffix == ".npy" or (path.is_dir() and (version / "embeddings.npy").exists()):
        vecs = _bare_vectors(path, ids, pipeline)
    else:
        if ids is not None or texts is not None:
            raise InputError("--ids and --texts apply to vectors and embedding stores; a corpus file "
                             "brings its own ids and texts")
        recs = list(read_corpus(path, format, text_field, id_field))
        pipeline = pipeline if pipeline is not None else Pipeline()
        X = pipeline.encode([r.text for r in recs], batch_size=batch_size, show_progress_bar=show_progress_bar)
        return Vectors(X, [r.id for r in recs], [r.text for r in recs], pipeline)
    if texts is not None:
        recs = list(read_corpus(texts, format, text_field, id_field))
        if [r.id for r in recs] != [str(i) for i in vecs.ids]:
            raise InputError(f"{texts}: its {len(recs)} ids do not match the {len(vecs.ids)} ids of "
                             f"{path} (the same ids in the same order are needed)")
        vecs.texts = [r.text for r in recs]
    return vecs


def _bare_vectors(path: Path, ids: str | os.PathLike | None, pipeline: Pipeline | None) -> Vectors:
    from ..store import read_ids

    file = path / "embeddings.npy" if path.is_dir() else path
    if path.is_dir() and ids is None:
        ids = path / "ids.txt"
    try:
        X = np.load(file, mmap_mode="r", allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError):
        raise no_file(file) from None
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{file}: not a readable .npy file ({e})") from None
    if X.ndim != 2 or X.dtype.kind not in "fiu":
        raise InputError(f"{file}: expected a 2-D numeric array (n, dim), found {X.dtype} {X.shape}")
    if ids is None:
        raise InputError(f"{file}: bare vectors need their ids: give an ids file (index build --ids FILE, one "
                         "id a line, in row order), or use an embedding dir from simkit encode")
    id_list = read_ids(Path(ids))
    if len(id_list) != X.shape[0]:
        raise InputError(f"{ids}: {len(id_list)} ids for {X.shape[0]} vectors in {file}")
    if pipeline is not None and pipeline.dim is None:
        pipeline.encoder  # noqa: B018 -- loads the model, so its dimension is known and checked
    if pipeline is not None and pipeline.dim != X.shape[1]:
        raise InputError(f"{file} holds {X.shape[1]}-dim vectors, but the model {pipeline.model!r} "
                         f"makes {pipeline.dim}-dim ones")
    return Vectors(np.asarray(X, dtype=np.float32), id_list, None, pipeline)


def check_same_pipeline(own: Pipeline, other: Pipeline, what: str) -> None:
    """Refuse ``other`` unless it makes the same vectors as ``own`` (model and transforms)."""
    own.check_same_model(other, what)
    if own.transform_fingerprint != other.transform_fingerprint:
        raise InputError(f"{what} was made with transforms {own.to_dict()['steps']!r}; the vectors "
                         f"given were made with {other.to_dict()['steps']!r}")


def build_index(input: str | os.PathLike, *, preset: str | None = None, factory: str | None = None,
                metric: str = "cosine", transform: Any = None, nbits: int = 256,
                lsh_mode: str = "flat", chunk_size: int = 65536, train_size: int | None = None,
                seed: int = 0, on_disk: str | os.PathLike | None = None, **read_options) -> BaseIndex:
    """Build an index (not saved) from an embedding store, a corpus or bare vectors.

    ``preset`` is one of ``flat``, ``ivf``, ``hnsw``, ``ivfpq``, ``lsh``; ``factory`` a
    FAISS factory string instead; ``transform`` a fitted chain the index applies to its
    input (e.g. whitening); ``read_options`` go to :func:`read_vectors`.

    An embedding store (single-file or sharded) is streamed: the index is trained on a
    sample of ``train_size`` rows (default: every row up to 65,536, else
    ``max(65536, 64 * nlist)``, drawn with ``seed``), then the vectors are added
    ``chunk_size`` rows at a time, shard by shard. Memory: the index, the sample and one chunk.
    ``on_disk`` (a scratch directory; IVF indexes from a store): each chunk is indexed apart
    and the inverted lists are merged on disk (``faiss.contrib.ondisk.merge_ondisk``), so even
    the index need not fit in memory; :meth:`~simkit.index.BaseIndex.save` copies them in.
    """
    from .lsh import LSHIndex
    from .vector import VectorIndex

    if preset is not None and factory is not None:
        raise InputError("pass --preset or --factory, not both")
    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; expected one of: {', '.join(PRESETS)}")
    if preset != "lsh" and lsh_mode != "flat":
        raise InputError(f"--lsh-mode {lsh_mode!r} applies to --preset lsh; got --preset {preset!r}")
    def make(pipeline):
        if preset == "lsh":
            return LSHIndex(nbits=nbits, metric=metric, mode=lsh_mode, transform=transform, pipeline=pipeline)
        return VectorIndex(factory, preset=preset, metric=metric, transform=transform, pipeline=pipeline)

    path = Path(input)
    # A store's files sit in its current version (CURRENT -> v-*/); a reshard's at the top.
    if path.is_dir() and (resolve_version(path) / "manifest.json").exists():
        # Flat and HNSW learn nothing from training: their "sample" is the first chunk.
        learns = factory is not None or preset in ("ivf", "ivfpq", "lsh")
        return _build_streaming(path, make, chunk_size, train_size if learns else min(chunk_size, 65536),
                                seed, on_disk, **read_options)
    if on_disk is not None:
        raise InputError("on_disk (--on-disk) builds from an embedding store; encode the corpus first")
    src = read_vectors(input, **read_options)
    return make(src.pipeline).add(src.vectors, src.ids, src.texts)


def _build_streaming(path: Path, make, chunk_size: int, train_size: int | None, seed: int,
                     on_disk: str | os.PathLike | None, *,
                     pipeline: Pipeline | None = None, texts: str | os.PathLike | None = None,
                     format: CorpusFormat = "auto", text_field: str | None = None,
                     id_field: str | None = None, show_progress_bar: bool | None = None,
                     **ignored) -> BaseIndex:
    """An index from an embedding store: trained on a sample, filled chunk by chunk."""
    from ..embed import _chunks
    from ..store import EmbeddingStore
    from .factory import ivf_nlist

    if chunk_size < 1 or (train_size is not None and train_size < 1):
        raise InputError(f"chunk_size={chunk_size}, train_size={train_size}; expected positive integers")
    store = EmbeddingStore.load(path)
    own = store.pipeline
    if pipeline is not None and own is not None:
        check_same_pipeline(own, pipeline, f"the embedding store {path}")
    index = make(own if own is not None else pipeline)
    text_list = None
    if texts is not None:
        recs = list(read_corpus(texts, format, text_field, id_field))
        if [r.id for r in recs] != store.ids:
            raise InputError(f"{texts}: its {len(recs)} ids do not match the {len(store.ids)} ids of "
                             f"{path} (the same ids in the same order are needed)")
        text_list = [r.text for r in recs]
    n = len(store.ids)
    if n == 0:
        raise InputError(f"{path}: the store holds no vectors")
    size = min(n, train_size if train_size is not None else
               (n if n <= 65536 else max(65536, 64 * ivf_nlist(n))))
    rows = slice(0, n) if size == n else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    index.train(store.embeddings[rows], expected_count=n)
    store.release()  # the sample's pages
    chunks = ((X, store.ids[a: a + len(X)], text_list[a: a + len(X)] if text_list is not None else None)
              for a, X in _chunks(store, chunk_size, "index", show_progress_bar))
    if on_disk is not None:
        if not hasattr(index, "add_on_disk"):
            raise InputError("on_disk (--on-disk) applies to FAISS IVF indexes, not to LSH")
        return index.add_on_disk(chunks, on_disk)
    for X, ids, texts_chunk in chunks:
        index.add(X, ids, texts_chunk)
    return index


def add_input(index: str | os.PathLike, input: str | os.PathLike, *, upsert: bool = False,
              num_threads: int | None = None, **read_options) -> dict:
    """Add the documents of a store / corpus / vectors to the saved index at ``index``.

    A corpus is encoded by the index's own pipeline; a store must come from that pipeline.
    Returns ``{"added", "count_before", "count"}``.
    """
    from .base import load_index

    current = load_index(index)
    own = current.pipeline_
    if own is not None and num_threads is not None:
        own.num_threads = num_threads
    if Path(input).is_file() and Path(input).suffix != ".npy":
        read_options["pipeline"] = current.query_pipeline()
    elif own is not None:
        read_options["pipeline"] = own
    src = read_vectors(input, **read_options)
    from .ops import add_to_index  # a locked read-modify-write of the newest version

    return add_to_index(index, src.vectors, src.ids, src.texts, upsert=upsert, pipeline=src.pipeline)


def describe_index(index: str | os.PathLike) -> dict:
    """The saved config of an index, its current version's files and sizes, and what is left of
    older versions or crashed writers (JSON-able)."""
    from ..fsutil import artifact_status, resolve_version
    from .base import read_index_config

    cfg, version = read_index_config(index), resolve_version(index)
    files = {p.name: p.stat().st_size for p in sorted(version.iterdir()) if p.is_file()}
    return {**cfg, "files": files, "bytes": sum(files.values()), **artifact_status(index)}
