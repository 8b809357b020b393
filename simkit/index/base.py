"""What FAISS and LSH indexes share: ids/texts/metadata, the transform chain, the pipeline,
input checks, result formatting and the directory format.

Vectors given to ``add`` / ``search`` are in the *input* space: the output of the index's
:class:`~simkit.pipeline.Pipeline` (the model's space, or a whitened store's space). The index
applies its own transform chain and, for ``metric='cosine'``, L2-normalises, so corpus
vectors, query vectors and text queries all go through the same steps. Text queries are
encoded by the pipeline the index records, and a pipeline with other weights is refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .. import __version__
from ..errors import FormatError, InputError, ParameterError
from ..fsutil import atomic_dir, cfg_value, load_versioned, read_config, resolve_version, write_json
from .store import DocStore

FORMAT = "simkit-index"
FORMAT_VERSION = 1
Hit = dict  # {"id", "score", "text", "metadata"}


class BaseIndex:
    """Shared behaviour; subclasses implement ``_fit``, ``_add``, ``_remove``, ``_search``,
    ``_ntotal``, ``_save_payload`` and ``_load``, and register under their ``kind``."""

    kind = ""
    kinds: dict[str, type[BaseIndex]] = {}  # kind -> class, filled as subclasses are defined
    metric: str
    transform: Any
    model: Any
    pipeline: Any

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            BaseIndex.kinds[cls.kind] = cls

    # -- state ------------------------------------------------------------------------
    @property
    def store_(self) -> DocStore:
        if getattr(self, "_store", None) is None:
            self._store = DocStore()
        return self._store

    @property
    def dim_in_(self) -> int | None:
        """Dimension of the vectors ``add`` / ``search`` take (the transform's input)."""
        return getattr(self, "_dim_in", None)

    @property
    def dim_(self) -> int | None:
        """Dimension of the indexed vectors (the transform's output)."""
        return getattr(self, "_dim", None)

    def __len__(self) -> int:
        return self._ntotal() if self.is_fitted else 0

    @property
    def is_fitted(self) -> bool:
        return False

    @property
    def pipeline_(self):
        """The :class:`~simkit.pipeline.Pipeline` that makes this index's input vectors from
        text (``None`` for an index built from bare vectors). ``model=`` (an Encoder, a model
        path or a 0.1 model reference) is read as a pipeline without transforms."""
        if "_pipeline" not in self.__dict__:
            self._pipeline = _as_pipeline(getattr(self, "pipeline", None), getattr(self, "model", None))
        return self._pipeline

    @property
    def model_ref_(self) -> dict | None:
        """The pipeline's record as a dict (model, fingerprint, pooling, ...), or ``None``."""
        p = self.pipeline_
        return p.to_dict() if p is not None else None

    # -- input checks -----------------------------------------------------------------
    def _prepare(self, vectors, name: str) -> tuple[np.ndarray, bool]:
        """float32 (n, d) in the index space; ``single`` when a 1-D vector was given.

        Rows must have a finite squared norm in float32: NaN / inf are refused, and so are
        values so large that scores overflow (FAISS would normalise such a row to zeros, or
        return no neighbours for it under ``l2``, without a word).
        """
        if (type(vectors) is np.ndarray and vectors.ndim == 1 and vectors.dtype == np.float32
                and self.transform is None and vectors.shape[0] == self.dim_in_ and vectors.flags.c_contiguous
                and math.isfinite(faiss.fvec_norm_L2sqr(faiss.swig_ptr(vectors), vectors.shape[0]))):
            # The single-query fast path (a float32 row, no transform): the check below for one
            # row, without the numpy calls (~2 us of a ~40 us query on a small index).
            if self.metric != "cosine":
                return vectors[None, :], True
            Y = vectors.reshape(1, -1).copy()
            faiss.normalize_L2(Y)  # as below, so a single query scores exactly like a batch row
            return Y, True
        X = np.asarray(vectors)
        single = X.ndim == 1
        if single:
            X = X[None, :]
        if X.ndim != 2:
            raise InputError(f"{name} must be 1-D (one vector) or 2-D (n, dim); got shape {X.shape}")
        if X.shape[1] == 0:
            raise InputError(f"{name} have dimension 0 (shape {X.shape}: an empty array?); expected dimension >= 1")
        if X.dtype.kind not in "fiu":
            raise InputError(f"{name} must be numeric; got dtype {X.dtype}")
        X = np.ascontiguousarray(X, dtype=np.float32)
        want = self.dim_in_ if self.dim_in_ is not None else getattr(self.transform, "n_features_in_", None)
        if want is not None and X.shape[1] != want:
            raise InputError(f"{name} have dimension {X.shape[1]}, but this index expects dimension {want}")
        Y = X
        if self.transform is not None:
            Y = np.ascontiguousarray(self.transform.transform(X), dtype=np.float32)
        # NaN / inf in a row make its squared norm non-finite, and so does overflow: one pass
        # (FAISS's, which also spares numpy's overflow warnings) checks for all three.
        sq = np.empty(Y.shape[0], np.float32)
        if Y.size:
            faiss.fvec_norms_L2sqr(faiss.swig_ptr(sq), faiss.swig_ptr(Y), Y.shape[1], Y.shape[0])
        if not np.isfinite(sq).all():
            bad = ~np.isfinite(X).all(axis=1)
            if bad.any():
                raise InputError(f"{name} row {int(np.flatnonzero(bad)[0])} contains NaN or inf ({int(bad.sum())} bad rows)")
            row = int(np.flatnonzero(~np.isfinite(sq))[0])
            where = " after the transform" if self.transform is not None else ""
            raise InputError(f"{name} row {row} overflows float32{where}: its squared norm is above 3.4e38 "
                             "(values too large); scale the vectors down")
        if self.metric == "cosine":
            if isinstance(vectors, np.ndarray) and np.may_share_memory(Y, vectors):
                Y = Y.copy()  # never scale the caller's array (but do not copy a fresh conversion again)
            faiss.normalize_L2(Y)  # in place; zero vectors stay zero
        if self.dim_in_ is None:
            self._dim_in, self._dim = X.shape[1], Y.shape[1]
        return Y, single

    def _check_docs(self, n: int, ids, texts, metadata) -> list:
        if ids is None:
            start = self.store_.next_label
            ids = list(range(start, start + n)) if self.store_.id_type != "str" else [str(i) for i in range(start, start + n)]
        ids = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
        for what, seq in (("ids", ids), ("texts", texts), ("metadata", metadata)):
            if seq is not None and len(seq) != n:
                raise InputError(f"{len(seq)} {what} for {n} vectors; expected one per vector")
        return ids

    # -- public API -------------------------------------------------------------------
    def train(self, vectors, expected_count: int | None = None):
        """Build and train the index on ``vectors`` (model space) without adding them.

        ``expected_count``: how many vectors the index will hold, when ``vectors`` is a sample
        (a preset sizes its IVF lists from it). Returns self.
        """
        if self.is_fitted:
            raise InputError("this index is already trained")
        X, _ = self._prepare(vectors, "training vectors")
        self.expected_count_ = expected_count
        self._fit(X)
        return self

    def add(self, vectors, ids: Sequence | None = None, texts: Sequence[str] | None = None,
            metadata: Sequence[dict] | None = None):
        """Add documents; an id already in the index is an error (see :meth:`upsert`). Returns self."""
        return self._add_docs(vectors, ids, texts, metadata, upsert=False)

    def upsert(self, vectors, ids: Sequence, texts: Sequence[str] | None = None,
               metadata: Sequence[dict] | None = None):
        """Add documents, replacing those whose id is already in the index. Returns self."""
        return self._add_docs(vectors, ids, texts, metadata, upsert=True)

    def _add_docs(self, vectors, ids, texts, metadata, upsert: bool):
        X, _ = self._prepare(vectors, "vectors")
        if X.shape[0] == 0:
            raise InputError("no vectors to add (got an empty array)")
        ids = self._check_docs(X.shape[0], ids, texts, metadata)
        self.store_.check_new_ids(ids, allow_existing=upsert)
        if not self.is_fitted:
            self._fit(X)
        if upsert:
            existing = [i for i in ids if i in self.store_]
            if existing:
                self.remove(existing)
        labels = self.store_.add(ids, texts, metadata)
        try:
            self._add(X, labels)
        except BaseException:
            self.store_.remove(labels)
            raise
        return self

    def remove(self, ids: Sequence) -> int:
        """Remove documents by id (an unknown id is an error); returns how many were removed."""
        ids = list(ids)
        labels = self.store_.labels_of(ids)
        if len(labels):
            self._remove(labels)
            self.store_.remove(labels)
        return len(labels)

    def get(self, doc_id) -> dict:
        """``{id, text, metadata}`` of one document (read from the store, not all texts)."""
        return self.store_.get(doc_id)

    def search(self, queries, top_k: int = 10, **params) -> list:
        """Nearest documents: for one 1-D query a list of hits, for (n, d) queries a list per query.

        A hit is ``{"id", "score", "text", "metadata"}``; hits are sorted by score, higher is
        better (cosine / inner product; minus the squared distance for ``l2``). Fewer than
        ``top_k`` hits come back when the index holds fewer (or, for IVF, the probed lists do).
        """
        if not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ParameterError("top_k", top_k, "a positive integer")
        n = len(self)
        if n == 0:
            raise InputError("the index is empty; add vectors before searching")
        X, single = self._prepare(queries, "queries")
        scores, labels = self._search(X, min(int(top_k), n), **params)
        hits = self._hits(scores, labels)
        return hits[0] if single else hits

    def search_text(self, texts: str | Sequence[str], top_k: int = 10, pipeline=None, encoder=None,
                    batch_size: int = 32, **params) -> list:
        """Encode ``texts`` with the index's pipeline, then :meth:`search`.

        ``encoder`` (an :class:`~simkit.encoder.Encoder` already loaded) or ``pipeline``
        replaces the stored model, e.g. after it moved; either must have the same weights
        (fingerprint), pooling and max_seq_length as the one the index was built with.
        """
        pipe = self.query_pipeline(pipeline, encoder)
        single = isinstance(texts, str)
        q = pipe.encode([texts] if single else list(texts), batch_size=batch_size, show_progress_bar=False)
        hits = self.search(q, top_k=top_k, **params)
        return hits[0] if single else hits

    def query_pipeline(self, pipeline=None, encoder=None):
        """The pipeline text queries go through: the stored one, or the one given, checked."""
        own = self.pipeline_
        if pipeline is None and encoder is None:
            if own is None or not own.has_model:
                raise InputError("this index has no model reference (it was built from bare vectors), "
                                 "so it cannot encode text; search it with vectors, or pass pipeline=...")
            return own
        if pipeline is None:
            pipeline = type(own).from_encoder(encoder, own.transform) if own is not None else _as_pipeline(None, encoder)
        if own is not None:
            if own.fingerprint and not pipeline.fingerprint and pipeline.has_model:
                pipeline.encoder  # noqa: B018 -- load it: its weights are what must match
            own.check_same_model(pipeline)
            if own.dim is not None and pipeline.dim is not None and own.dim != pipeline.dim:
                raise InputError(f"the query pipeline makes {pipeline.dim}-dim vectors; this index takes {own.dim}")
        return pipeline

    def load_encoder(self, **kwargs):
        """The :class:`~simkit.encoder.Encoder` of the stored pipeline."""
        return self.query_pipeline().encoder

    def _hits(self, scores: np.ndarray, labels: np.ndarray) -> list[list[Hit]]:
        store = self.store_
        id_of = store._ids  # label -> id (object array); FAISS pads with label -1 when fewer results exist
        if not store.has_payload:  # the common vectors-only case: no store lookups at all
            # (item access in Python beats fancy indexing + np.where here: ~2.4 vs 4.1 us a query)
            return [[{"id": id_of[lab], "score": s, "text": None, "metadata": None}
                     for s, lab in zip(srow, lrow) if lab >= 0]
                    for srow, lrow in zip(scores.tolist(), labels.tolist())]
        payload = store.payload(labels[labels >= 0])
        out = []
        for srow, lrow in zip(scores.tolist(), labels.tolist()):
            hits = []
            for s, lab in zip(srow, lrow):
                if lab >= 0:
                    text, meta = payload.get(lab, (None, None))
                    hits.append({"id": id_of[lab], "score": s, "text": text, "metadata": meta})
            out.append(hits)
        return out

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write the index directory atomically (see the module docstring of simkit.index)."""
        if not self.is_fitted:
            raise InputError("cannot save an index that has no vectors yet")
        from ..transforms import describe, write_transform

        with atomic_dir(path, overwrite=overwrite, kind=FORMAT) as tmp:
            extra = self._save_payload(tmp)
            self.store_.save(tmp / "store.sqlite")
            if self.transform is not None:
                write_transform(self.transform, tmp / "transform")
            if self.pipeline_ is not None:
                self.pipeline_.save_into(tmp / "pipeline")
            write_json(tmp / "config.json", {
                "format": FORMAT, "format_version": FORMAT_VERSION, "simkit_version": __version__,
                "kind": self.kind, "dim": self.dim_, "dim_in": self.dim_in_, "metric": self.metric,
                "count": len(self), "ids": self.store_.id_type,
                "transform": "transform" if self.transform is not None else None,
                "transform_steps": describe(self.transform) if self.transform is not None else None,
                "model": json.loads(json.dumps(self.model_ref_, default=str)),
                "pipeline": "pipeline" if self.pipeline_ is not None else None, **extra,
            })

    def _load_common(self, path: Path, cfg: dict) -> None:
        """Store, transform and pipeline of the version directory ``path`` (config already checked)."""
        from ..pipeline import Pipeline
        from ..transforms import load_transform

        if cfg.get("pipeline") not in (None, "pipeline"):  # never follow a path out of the artifact
            raise FormatError(f"{path / 'config.json'}: 'pipeline' must be 'pipeline' or null, found {cfg['pipeline']!r}")
        self._pipeline = (Pipeline.load(path / "pipeline") if cfg.get("pipeline")
                          else Pipeline.from_legacy(cfg.get("model") if isinstance(cfg.get("model"), dict) else None))
        self._dim, self._dim_in = cfg["dim"], cfg["dim_in"]
        self._store = DocStore.open(path / "store.sqlite")
        if self._store.count != cfg["count"]:
            raise FormatError(f"{path / 'store.sqlite'}: {self._store.count} documents, but config.json says {cfg['count']}")
        if self._store.id_type and cfg["ids"] and self._store.id_type != cfg["ids"]:
            raise FormatError(f"{path / 'store.sqlite'}: id type {self._store.id_type!r}, but config.json says {cfg['ids']!r}")
        if self.transform is not None:
            # Only the chain saved inside this version: never a path from the config elsewhere.
            self.transform = load_transform(path / "transform", versioned=False)
            dims = (getattr(self.transform.steps[0], "n_features_in_", self._dim_in), self.transform.n_components_)
            if dims != (self._dim_in, self._dim):
                raise FormatError(f"{path / 'transform'}: maps {dims[0]} -> {dims[1]} dims, "
                                  f"but config.json says {self._dim_in} -> {self._dim}")
        elif self._dim_in != self._dim:
            raise FormatError(f"{path / 'config.json'}: dim_in {self._dim_in} != dim {self._dim} without a transform")

    def _check_labels(self, labels: np.ndarray, where: Path) -> None:
        """Every label the vectors carry must name a document of the store."""
        if not len(labels):
            return
        id_of = self.store_._ids
        bad = (labels < 0) | (labels >= len(id_of))
        if not bad.any():
            bad = np.fromiter((id_of[x] is None for x in labels.tolist()), dtype=bool, count=len(labels))
        if bad.any():
            raise FormatError(f"{where}: label {int(labels[np.flatnonzero(bad)[0]])} has no document in "
                              f"store.sqlite ({int(bad.sum())} such labels); the index and its store disagree")


def read_index_config(path: str | os.PathLike) -> dict:
    """The checked config.json of the current version (every key the loaders use)."""
    return check_index_config(resolve_version(path))


def check_index_config(path: Path) -> dict:
    cfg = read_config(path, FORMAT, FORMAT_VERSION)
    f = path / "config.json"
    kind = cfg_value(cfg, "kind", f, str)
    if kind not in BaseIndex.kinds:
        raise FormatError(f"{f}: unknown index kind {kind!r}; expected one of {sorted(BaseIndex.kinds)}")
    for key in ("dim", "dim_in", "count"):
        if cfg_value(cfg, key, f, int) < (0 if key == "count" else 1):
            raise FormatError(f"{f}: key {key!r} is {cfg[key]!r}, expected a positive integer")
    cfg_value(cfg, "metric", f, str)
    if cfg_value(cfg, "ids", f, str, optional=True) not in (None, "str", "int"):
        raise FormatError(f"{f}: key 'ids' is {cfg['ids']!r}, expected 'str' or 'int'")
    cfg.setdefault("ids", None)
    if cfg_value(cfg, "transform", f, str, optional=True) not in (None, "transform"):
        raise FormatError(f"{f}: key 'transform' is {cfg['transform']!r}; an index's transform must be "
                          "its own 'transform' directory (no paths outside the index)")
    cfg_value(cfg, "model", f, dict, optional=True)
    return cfg


def load_index(path: str | os.PathLike, mmap: bool = False):
    """Load a saved index of any registered kind (:class:`VectorIndex`, :class:`LSHIndex`).

    All files come from one version of the index (see :mod:`simkit.fsutil`), so a concurrent
    rewrite never mixes two versions.
    """
    return load_versioned(path, lambda version: _load_version(version, mmap))


def _load_version(path: Path, mmap: bool):
    cfg = check_index_config(path)
    classes = BaseIndex.kinds
    return classes[cfg["kind"]]._load(path, cfg, mmap)


def _as_pipeline(pipeline, model):
    """A Pipeline from ``pipeline=`` or the older ``model=`` (Encoder, path, or 0.1 reference)."""
    from ..pipeline import Pipeline

    if pipeline is not None:
        return pipeline
    if model is None:
        return None
    if isinstance(model, Pipeline):
        return model
    if hasattr(model, "model_card"):  # a loaded Encoder
        return Pipeline.from_encoder(model)
    if isinstance(model, (str, os.PathLike)):
        return Pipeline(str(model))
    return Pipeline.from_legacy(dict(model))
