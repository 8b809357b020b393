"""VectorIndex: any FAISS index (factory string or preset) with ids, texts and metadata.

>>> idx = VectorIndex(preset="hnsw", metric="cosine")
>>> idx.add(X, ids=["a", "b", ...], texts=[...])          # X: (n, 256) float32
>>> idx.search(X[0], top_k=3)                              # [{"id": "a", "score": 1.0, ...}, ...]
>>> idx.search(X[:5], top_k=3, efSearch=256)               # 5 lists of 3 hits
>>> idx.save("idx/"); load_index("idx/", mmap=True)

``metric='cosine'`` L2-normalises vectors and uses inner product; ``'ip'`` and ``'l2'`` pass
vectors through as they are (after the transform chain). Presets: ``flat`` (exact), ``ivf``
(``IVF{4√N},Flat``, nprobe ≈ 3% of the lists), ``hnsw`` (``HNSW32``, efSearch 128),
``ivfpq`` (``IVF{4√N},PQ{dim/4}``). An index trains on the first batch it is given (or on
:meth:`VectorIndex.train`), so give IVF / PQ indexes a representative first batch.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import FormatError, InputError, ParameterError
from ..fsutil import cfg_value
from . import factory as fx
from .base import BaseIndex


class VectorIndex(BaseIndex):
    """A FAISS index plus the id/text/metadata store, the transform chain and the model reference.

    Parameters: ``factory`` (any ``faiss.index_factory`` string) or ``preset`` (one of
    ``flat``, ``ivf``, ``hnsw``, ``ivfpq``; the default is ``flat``); ``metric``;
    ``nprobe`` / ``efSearch`` defaults for searches; ``transform`` (a fitted
    :class:`~simkit.transforms.Chain` or step); ``pipeline`` (the
    :class:`~simkit.pipeline.Pipeline` that made the input vectors; ``model=`` an Encoder or
    a model path is short for a pipeline without transforms) used by :meth:`search_text`.
    """

    kind = "faiss"

    def __init__(self, factory: str | None = None, *, preset: str | None = None,
                 metric: str = "cosine", nprobe: int | None = None, efSearch: int | None = None,
                 transform: Any = None, pipeline: Any = None, model: Any = None):
        self.factory = factory
        self.preset = preset
        self.metric = metric
        self.nprobe = nprobe
        self.efSearch = efSearch
        self.transform = transform
        self.pipeline = pipeline
        self.model = model

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "index_", None) is not None

    def _ntotal(self) -> int:
        return int(self.index_.ntotal)

    # -- training ---------------------------------------------------------------------
    def _fit(self, X: np.ndarray) -> None:
        fx.faiss_metric(self.metric)
        self._check_knobs()
        if self.factory is not None and self.preset is not None:
            raise InputError("pass either factory=... or preset=..., not both")
        if self.factory is None:
            # A preset sizes the index for the vectors it will hold (train() may be told).
            n = self.__dict__.get("expected_count_") or X.shape[0]
            self.factory_ = fx.resolve_preset(self.preset or "flat", n, X.shape[1])
        else:
            self.factory_ = self.factory
        index = fx.make_index(self.factory_, X.shape[1], self.metric)
        if not index.is_trained:
            fx.check_training(index, X.shape[0], self.factory_)
            index.train(X)
        ivf = fx.find_ivf(index)
        if ivf is not None and self.factory is None:
            ivf.nprobe = fx.default_nprobe(ivf.nlist)
        self.index_ = index
        self._bind()

    def _check_knobs(self) -> None:
        for name in ("nprobe", "efSearch"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ParameterError(name, value, "a positive integer (or None for the default)")

    def _bind(self) -> None:
        """Keep handles on the knobs searches turn, and their defaults."""
        self._check_knobs()
        self._ivf = fx.find_ivf(self.index_)
        self._hnsw = fx.find_hnsw(self.index_)
        if self.nprobe is not None and self._ivf is not None:
            self._ivf.nprobe = int(self.nprobe)
        if self.efSearch is not None and self._hnsw is not None:
            self._hnsw.efSearch = int(self.efSearch)

    # -- changes ----------------------------------------------------------------------
    def _writable(self) -> None:
        if getattr(self, "_mmapped", False):
            raise InputError("this index was loaded with mmap=True and is read-only; load it with mmap=False to change it")

    def _add(self, X: np.ndarray, labels: np.ndarray) -> None:
        self._writable()
        if self.__dict__.get("_ivfdata") is not None:
            raise InputError("this index keeps its inverted lists on disk (built with on_disk / --on-disk); "
                             "rebuild it to add vectors")
        self.index_.add_with_ids(X, labels)

    def add_on_disk(self, chunks, folder: str | os.PathLike) -> VectorIndex:
        """Fill this trained, empty IVF index from ``(vectors, ids, texts)`` chunks, its inverted
        lists on disk: each chunk becomes a small index file in ``folder``, and FAISS's
        ``merge_ondisk`` merges them into ``folder/index.ivfdata`` (memory-mapped when searched).
        :meth:`save` copies that file into the index directory. Returns self."""
        from faiss.contrib.ondisk import merge_ondisk

        if not self.is_fitted or len(self) or fx.find_ivf(self.index_) is None:
            raise InputError("add_on_disk needs a trained, empty IVF index (train() it first)")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for k, (vectors, ids, texts) in enumerate(chunks):
            X, _ = self._prepare(vectors, "vectors")
            ids = self._check_docs(X.shape[0], ids, texts, None)
            self.store_.check_new_ids(ids)
            labels = self.store_.add(ids, texts, None)
            block = faiss.clone_index(self.index_)
            block.add_with_ids(X, labels)
            files.append(str(folder / f"block-{k:05d}.index"))
            faiss.write_index(block, files[-1])
            del block
        ivfdata = folder / "index.ivfdata"
        with _c_stdout_to_stderr():  # FAISS reports the file's size on stdout
            merge_ondisk(self.index_, files, str(ivfdata))
        for f in files:
            os.remove(f)
        self._ivfdata = ivfdata
        self._bind()
        return self

    def _remove(self, labels: np.ndarray) -> None:
        self._writable()
        if not fx.supports_remove(self.index_):
            raise InputError(f"the FAISS index {self.factory_!r} (HNSW) cannot remove vectors; rebuild it without them, or use preset 'flat' / 'ivf'")
        try:
            removed = self.index_.remove_ids(faiss.IDSelectorBatch(labels))
        except RuntimeError as e:
            raise InputError(f"the FAISS index {self.factory_!r} cannot remove vectors: {str(e).strip().splitlines()[-1]}") from None
        if removed != len(labels):
            raise FormatError(f"FAISS removed {removed} vectors for {len(labels)} ids; the index and its store disagree")

    # -- search -----------------------------------------------------------------------
    def _search(self, X: np.ndarray, k: int, nprobe: int | None = None, efSearch: int | None = None):
        saved = []
        for name, value in (("nprobe", nprobe), ("efSearch", efSearch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ParameterError(name, value, "a positive integer")
        if nprobe is not None:
            if self._ivf is None:
                raise InputError(f"nprobe applies to IVF indexes; this one is {self.factory_!r}")
            saved.append((self._ivf, "nprobe", self._ivf.nprobe))
            self._ivf.nprobe = int(nprobe)
        if efSearch is not None:
            if self._hnsw is None:
                raise InputError(f"efSearch applies to HNSW indexes; this one is {self.factory_!r}")
            saved.append((self._hnsw, "efSearch", self._hnsw.efSearch))
            self._hnsw.efSearch = int(efSearch)
        try:
            with fx.search_tuning(X.shape[0], blas=self.metric != "l2"):
                D, L = self.index_.search(X, k)
        finally:
            for obj, name, value in saved:
                setattr(obj, name, value)
        return (-D if self.metric == "l2" else D), L

    # -- persistence ------------------------------------------------------------------
    def _save_payload(self, tmp: Path) -> dict:
        try:
            faiss.write_index(self.index_, str(tmp / "index.faiss"))
        except RuntimeError as e:  # a full disk, for one: FAISS reports it as a RuntimeError
            msg = str(e).strip().splitlines()[-1]
            reason = msg[msg.rfind("(") + 1 : -1] if msg.endswith(")") else msg
            raise InputError(f"{tmp / 'index.faiss'}: cannot write the FAISS index ({reason})") from None
        ivfdata = self.__dict__.get("_ivfdata")
        if ivfdata is not None:  # inverted lists on disk: they travel beside index.faiss
            try:
                os.link(ivfdata, tmp / "index.ivfdata")
            except OSError:
                import shutil

                shutil.copyfile(ivfdata, tmp / "index.ivfdata")
        return {
            "factory": self.factory_, "preset": self.preset,
            "nprobe": self._ivf.nprobe if self._ivf is not None else None,
            "efSearch": self._hnsw.efSearch if self._hnsw is not None else None,
        }

    @classmethod
    def _load(cls, path: Path, cfg: dict, mmap: bool = False) -> VectorIndex:
        where = path / "config.json"
        if cfg["metric"] not in fx.METRICS:
            raise FormatError(f"{where}: unknown metric {cfg['metric']!r}; expected one of {', '.join(fx.METRICS)}")
        factory = cfg_value(cfg, "factory", where, str)
        for key in ("nprobe", "efSearch"):
            if cfg_value(cfg, key, where, int, optional=True) is not None and cfg[key] < 1:
                raise FormatError(f"{where}: key {key!r} is {cfg[key]!r}, expected a positive integer or null")
        self = cls(factory, preset=None, metric=cfg["metric"], transform=cfg.get("transform"),
                   model=cfg.get("model"))
        self.factory_ = factory
        file = path / "index.faiss"
        if not file.is_file():
            raise FormatError(f"{file}: not found; the index directory {path} is incomplete")
        try:
            # ONDISK_SAME_DIR: on-disk inverted lists (index.ivfdata) are found beside index.faiss
            # (which are memory-mapped already: IO_FLAG_MMAP on them crashes FAISS 1.15).
            ondisk = (path / "index.ivfdata").is_file()
            flags = faiss.IO_FLAG_ONDISK_SAME_DIR | (faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
                                                     if mmap and not ondisk else 0)
            if ondisk:
                with _c_stdout_to_stderr():  # FAISS prints where it found the lists on stdout
                    self.index_ = faiss.read_index(str(file), flags)
            else:
                self.index_ = faiss.read_index(str(file), flags)
        except RuntimeError as e:
            raise FormatError(f"{file}: not a readable FAISS index (truncated or foreign?): {str(e).strip().splitlines()[-1]}") from None
        self._mmapped = mmap
        if (path / "index.ivfdata").is_file():
            self._ivfdata = path / "index.ivfdata"
        if self.index_.d != cfg["dim"] or self.index_.ntotal != cfg["count"]:
            raise FormatError(f"{file}: dim {self.index_.d} / {self.index_.ntotal} vectors, but config.json says dim {cfg['dim']} / {cfg['count']}")
        if self.index_.metric_type != fx.faiss_metric(cfg["metric"]):
            raise FormatError(f"{file}: FAISS metric type {self.index_.metric_type} does not match metric {cfg['metric']!r} in config.json")
        self._load_common(path, cfg)
        labels = fx.index_labels(self.index_)
        if labels is not None:
            self._check_labels(labels, file)
        self._bind()
        if cfg.get("nprobe") is not None and self._ivf is not None:
            self._ivf.nprobe = int(cfg["nprobe"])
        if cfg.get("efSearch") is not None and self._hnsw is not None:
            self._hnsw.efSearch = int(cfg["efSearch"])
        return self

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = False) -> VectorIndex:
        from .base import load_index

        index = load_index(path, mmap=mmap)
        if not isinstance(index, cls):
            raise FormatError(f"{path}: holds a {type(index).__name__}, not a {cls.__name__}")
        return index


@contextlib.contextmanager
def _c_stdout_to_stderr():
    """Send what C code writes to file descriptor 1 to stderr (stdout carries the CLI's data)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
        import ctypes

        ctypes.CDLL(None).fflush(None)  # C's buffered stdout goes out now, to stderr
    finally:
        os.dup2(saved, 1)
        os.close(saved)
