"""The embedding pipeline: the one object that turns text into the vectors an artifact stores.

A :class:`Pipeline` is a model reference (path or hub id, plus a fingerprint of its weights),
the pooling, ``max_seq_length`` and a transform chain (whitening, JL projection) whose last
step may be :class:`~simkit.transforms.Normalize`. Embedding stores, indexes and eval runs
record the pipeline that made their vectors, so a text query is always encoded exactly like
the corpus, and a model with other weights is refused.

>>> p = Pipeline("my-model", pooling="cls")                      # doctest: +SKIP
>>> X = p.encode(["花呗怎么还款", "借呗能提前还吗"])                 # (2, 768) float32
>>> pw = p.then(Whitening(256).fit(X_big))                       # text -> whitened vectors
>>> pw.save("pipe/"); Pipeline.load("pipe/").encode("花呗")       # (256,)

The model is loaded on the first :meth:`encode`, so loading an index or a store that records
a pipeline does not import torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import FormatError, InputError
from .fsutil import atomic_dir, load_versioned, read_config, write_json

FORMAT = "simkit-pipeline"
FORMAT_VERSION = 1


class Pipeline:
    """Text -> stored vector: model, pooling, max_seq_length, transforms, normalisation.

    Parameters: ``model`` (a model directory or hub id; ``None`` = the bundled default or
    ``$SIMKIT_MODEL``), ``pooling`` / ``max_seq_length`` (``None`` = the model's own),
    ``transform`` (a fitted :class:`~simkit.transforms.Chain` or step, applied to the pooled
    vectors; ``Normalize`` as its last step L2-normalises), ``fingerprint`` (the expected
    weights fingerprint: loading other weights is refused), and the compute options
    ``dtype``, ``backend`` (``torch`` / ``onnx``), ``onnx_dir`` (an ONNX export to run;
    default: the one saved with the pipeline, else a cached export), ``num_threads`` and
    ``num_streams`` (batches run side by side, see :class:`~simkit.encoder.Encoder`),
    which do not change what the pipeline *is*.

    >>> p = Pipeline(backend="onnx", dtype="int8")
    >>> p.save("faq-pipeline")          # config.json + onnx/ (the export, versions recorded)
    >>> Pipeline.load("faq-pipeline").encode(["花呗怎么还款"]).shape
    (1, 384)
    """

    # What identifies a pipeline; saved in config.json and compared between artifacts.
    config_keys = ("model", "fingerprint", "pooling", "max_seq_length", "dim_model")

    def __init__(self, model: str | os.PathLike | None = None, *, pooling: str | None = None,
                 max_seq_length: int | None = None, transform: Any = None,
                 fingerprint: str | None = None, dim_model: int | None = None,
                 dtype: str = "fp32", num_threads: int | None = None, backend: str = "torch",
                 onnx_dir: str | os.PathLike | None = None, num_streams: int = 1):
        self.model = model
        self.pooling = pooling
        self.max_seq_length = max_seq_length
        self.transform = transform
        self.fingerprint = fingerprint
        self.dim_model = dim_model
        self.dtype = dtype
        self.num_threads = num_threads
        self.backend = backend
        self.onnx_dir = onnx_dir
        self.num_streams = num_streams

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_encoder(cls, encoder, transform: Any = None) -> Pipeline:
        """Wrap a loaded :class:`~simkit.encoder.Encoder` (no second load of the weights)."""
        self = cls(encoder.model_path, pooling=encoder.pooling, max_seq_length=encoder.max_seq_length,
                   transform=transform, fingerprint=encoder.fingerprint,
                   dim_model=encoder.get_sentence_embedding_dimension(), dtype=encoder.dtype,
                   backend=encoder.backend, num_streams=encoder.num_streams)
        self.encoder_ = encoder
        return self

    def replace(self, **changes) -> Pipeline:
        """A copy with some constructor parameters changed (e.g. ``model=`` a moved copy: the
        recorded fingerprint still has to match when it loads)."""
        params = {k: getattr(self, k) for k in ("model", "pooling", "max_seq_length", "transform",
                                                 "fingerprint", "dim_model", "dtype", "num_threads",
                                                 "backend", "onnx_dir", "num_streams")}
        new = Pipeline(**{**params, **changes})
        new.made_by_ = self.__dict__.get("made_by_", _model_ref(self.model))  # named in errors
        return new

    def then(self, transform: Any) -> Pipeline:
        """A new pipeline: this one followed by ``transform`` (fitted on this one's output)."""
        from .transforms import Chain, flatten

        steps = [*flatten(self.transform), *flatten(transform)]
        new = Pipeline(self.model, pooling=self.pooling, max_seq_length=self.max_seq_length,
                       transform=Chain(steps) if steps else None, fingerprint=self.fingerprint,
                       dim_model=self.dim_model, dtype=self.dtype, num_threads=self.num_threads,
                       backend=self.backend, onnx_dir=self.onnx_dir, num_streams=self.num_streams)
        if "encoder_" in self.__dict__:
            new.encoder_ = self.encoder_
        return new

    @property
    def encoder(self):
        """The :class:`~simkit.encoder.Encoder`, loaded on first use and checked against
        the recorded fingerprint."""
        if "encoder_" not in self.__dict__:
            from .encoder import Encoder

            enc = Encoder(self.model, pooling=self.pooling, max_seq_length=self.max_seq_length,
                          dtype=self.dtype, num_threads=self.num_threads, backend=self.backend,
                          onnx_dir=self.onnx_dir, num_streams=self.num_streams)
            if self.fingerprint and enc.fingerprint != self.fingerprint:
                raise InputError(
                    f"model {enc.model_path!r} has other weights (fingerprint {enc.fingerprint}) than "
                    f"the model these vectors were made by, "
                    f"{self.__dict__.get('made_by_', _model_ref(self.model))!r} ({self.fingerprint}); "
                    "encode with the same model, or rebuild the artifact"
                )
            self.encoder_ = enc
            self.model = self.model if self.model is not None else enc.model_path
            self.pooling, self.max_seq_length = enc.pooling, enc.max_seq_length
            self.fingerprint = enc.fingerprint
            self.dim_model = enc.get_sentence_embedding_dimension()
        return self.encoder_

    # -- what it is -------------------------------------------------------------------
    @property
    def normalize_embeddings(self) -> bool:
        """Whether the final vectors are L2-normalised (the chain ends with Normalize)."""
        from .transforms import Normalize, flatten

        steps = flatten(self.transform)
        return bool(steps) and isinstance(steps[-1], Normalize)

    @property
    def dim(self) -> int | None:
        """Dimension of the final vectors."""
        if self.transform is not None:
            try:
                return self.transform.n_components_
            except AttributeError:  # a stateless tail (Normalize) that was never fitted
                pass
        return self.dim_model

    def get_sentence_embedding_dimension(self) -> int | None:
        return self.dim

    @property
    def transform_fingerprint(self) -> str | None:
        """A short hash of the transform steps' classes and learned arrays (None: no steps)."""
        import hashlib

        from .transforms import flatten

        steps = flatten(self.transform)
        if not steps:
            return None
        h = hashlib.sha256()
        for s in steps:
            h.update(type(s).__name__.encode())
            for key, arr in sorted(s._arrays().items()):
                h.update(key.encode())
                h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
        return "sha256:" + h.hexdigest()[:16]

    @property
    def has_model(self) -> bool:
        return self.model is not None or "encoder_" in self.__dict__

    def to_dict(self) -> dict:
        """The JSON record every artifact keeps of the pipeline that made its vectors."""
        from .transforms import describe

        return {
            "model": _model_ref(self.model), "fingerprint": self.fingerprint, "pooling": self.pooling,
            "max_seq_length": self.max_seq_length, "dim_model": self.dim_model, "dim": self.dim,
            "dtype": self.dtype, "backend": self.backend, "normalize_embeddings": self.normalize_embeddings,
            "transform_fingerprint": self.transform_fingerprint,
            "steps": describe(self.transform) if self.transform is not None else [],
        }

    def __repr__(self) -> str:
        steps = "+".join(s["class"] for s in self.to_dict()["steps"]) or "none"
        return (f"Pipeline(model={self.model!r}, pooling={self.pooling!r}, "
                f"max_seq_length={self.max_seq_length}, transform={steps})")

    def check_same_model(self, other: Pipeline, what: str = "this index") -> None:
        """Refuse (naming both) when ``other`` runs another model or pooling than this one."""
        if self.fingerprint and other.fingerprint and self.fingerprint != other.fingerprint:
            raise InputError(
                f"{what} was built with model {self.model!r} (weights {self.fingerprint}); the query "
                f"model {other.model!r} has other weights ({other.fingerprint}); query with the "
                "index's own model"
            )
        for key in ("pooling", "max_seq_length", "dim_model"):
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine is not None and theirs is not None and mine != theirs:
                raise InputError(f"{what} was built with {key}={mine!r}; the query pipeline "
                                 f"({other.model!r}) has {key}={theirs!r}")

    # -- encoding ---------------------------------------------------------------------
    def encode(self, sentences: str | Sequence[str], batch_size: int = 32,
               show_progress_bar: bool | None = None, progress_bar=None) -> np.ndarray:
        """Final vectors: (d,) for a str, (n, d) float32 for a list of str.

        ``progress_bar``: an open bar (``update(n)``) to advance per batch, for callers that
        encode a corpus in several calls.
        """
        single = isinstance(sentences, str)
        X = self.encoder.encode([sentences] if single else list(sentences), batch_size=batch_size,
                                show_progress_bar=show_progress_bar, progress_bar=progress_bar)
        X = self.transform_vectors(X)
        return X[0] if single else X

    def transform_vectors(self, X: np.ndarray) -> np.ndarray:
        """Apply the transform chain to vectors in the model's space (float32, C-contiguous)."""
        if self.transform is not None:
            X = self.transform.transform(X)
        return np.ascontiguousarray(X, dtype=np.float32)

    def search(self, index, queries: str | Sequence[str], top_k: int = 10, batch_size: int = 32,
               **params) -> list:
        """Encode ``queries`` with this pipeline and search ``index`` (whose input space must be
        this pipeline's output, and whose model must be this one)."""
        return index.search_text(queries, top_k=top_k, pipeline=self, batch_size=batch_size, **params)

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        """Write a pipeline directory: ``config.json``, if any ``transform/``, and with
        ``backend='onnx'`` the ONNX export in ``onnx/`` (opset and runtime versions recorded:
        loading under another ONNX Runtime is refused)."""
        with atomic_dir(path, overwrite=overwrite, kind=FORMAT) as tmp:
            self.save_into(tmp, with_onnx=self.backend == "onnx")

    def save_into(self, folder: Path, with_onnx: bool = False) -> None:
        """Write the pipeline's files into an open directory (an artifact's own ``pipeline/``
        records the backend but does not carry an export)."""
        from .transforms import write_transform

        folder.mkdir(parents=True, exist_ok=True)
        if self.transform is not None:
            write_transform(self.transform, folder / "transform")
        if with_onnx:
            self.encoder.export_onnx(folder / "onnx")
        write_json(folder / "config.json", {
            "format": FORMAT, "format_version": FORMAT_VERSION, "simkit_version": __version__,
            **self.to_dict(), "transform": "transform" if self.transform is not None else None,
            "onnx": "onnx" if with_onnx else None,
        })

    @classmethod
    def load(cls, path: str | os.PathLike, **runtime) -> Pipeline:
        """Read a pipeline directory (its current version); ``runtime`` sets ``dtype`` /
        ``num_threads`` / ``num_streams`` / ``backend``."""
        return load_versioned(path, lambda version: cls._load(version, runtime))

    @classmethod
    def _load(cls, path: Path, runtime: dict) -> Pipeline:
        from .transforms import load_transform

        cfg = read_config(path, FORMAT, FORMAT_VERSION)
        where = path / "config.json"
        for key, types in (("model", (str, type(None))), ("fingerprint", (str, type(None))),
                           ("pooling", (str, type(None))), ("max_seq_length", (int, type(None))),
                           ("dim_model", (int, type(None))), ("transform", (str, type(None)))):
            if key not in cfg or not isinstance(cfg[key], types):
                raise FormatError(f"{where}: key {key!r} is missing or has the wrong type")
        transform = None
        if cfg["transform"] is not None:
            if cfg["transform"] != "transform":  # never follow a path out of the artifact
                raise FormatError(f"{where}: 'transform' must be 'transform' or null, found {cfg['transform']!r}")
            transform = load_transform(path / "transform")
        onnx = cfg.get("onnx")
        if onnx is not None:
            if onnx != "onnx":  # never follow a path out of the artifact
                raise FormatError(f"{where}: 'onnx' must be 'onnx' or null, found {onnx!r}")
            if cfg.get("backend") != "onnx" or cfg.get("dtype") not in ("fp32", "int8"):
                raise FormatError(f"{where}: an ONNX export needs backend 'onnx' and dtype fp32 "
                                  f"or int8; found {cfg.get('backend')!r} / {cfg.get('dtype')!r}")
            # Saved with its export: run it, as saved, unless the caller asks otherwise.
            runtime = {"backend": "onnx", "dtype": cfg["dtype"], **runtime}
            if runtime["backend"] == "onnx" and runtime.get("onnx_dir") is None:
                from . import onnx_backend

                runtime["onnx_dir"] = path / "onnx"
                # Refuse another runtime / opset / weights now, naming the file, not at the
                # first encode.
                onnx_backend.check_export(path / "onnx", cfg["fingerprint"], runtime["dtype"])
        return cls(cfg["model"], pooling=cfg["pooling"], max_seq_length=cfg["max_seq_length"],
                   transform=transform, fingerprint=cfg["fingerprint"], dim_model=cfg["dim_model"],
                   **runtime)

    @classmethod
    def from_legacy(cls, ref: dict | None) -> Pipeline | None:
        """A pipeline from the model reference of an artifact written by simkit 0.1
        (``Encoder.model_card`` + ``normalize_embeddings``); ``None`` when it names no model."""
        if not ref or not ref.get("model"):
            return None
        from .transforms import Chain, Normalize

        norm = Chain([Normalize()]) if ref.get("normalize_embeddings") else None
        return cls(ref["model"], pooling=ref.get("pooling"), max_seq_length=ref.get("max_seq_length"),
                   transform=norm, dim_model=ref.get("dim"))


def _model_ref(model) -> str | None:
    """A local model directory as an absolute path, so an artifact works from any directory."""
    if model is None:
        return None
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else str(model)
