"""Dimension reducers as scikit-learn estimators: BERT-whitening and JL random projection.

>>> w = Whitening(n_components=256).fit(X)              # X: (n, 768) float32
>>> w.transform(X).shape                                # (n, 256), identity covariance on X
>>> chain = Chain([Whitening(256), Normalize()]).fit(X)
>>> save_transform(chain, "w/"); load_transform("w/").transform(X)   # identical outputs

A saved transform is a directory: ``config.json`` (format ``simkit-transform``, versioned,
the class names, parameters and state of each step) and one ``.npy`` per learned array,
read back with ``allow_pickle=False``. The index and the eval harness store the chain with
what they build, so a query is always transformed like the corpus.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import __version__
from .errors import FormatError, InputError, ParameterError, check_choice
from .fsutil import atomic_dir, load_npy, load_versioned, read_config, write_json
from .whitening import Whitening, _check_output, check_matrix

__all__ = [
    "Chain",
    "Normalize",
    "RandomProjection",
    "Whitening",
    "check_matrix",
    "describe",
    "flatten",
    "load_transform",
    "save_transform",
]

FORMAT = "simkit-transform"
FORMAT_VERSION = 1
KINDS = ("gaussian", "sparse", "orthogonal")


class RandomProjection(TransformerMixin, BaseEstimator):
    """Johnson-Lindenstrauss random projection ``y = x @ components_.T``.

    ``kind='gaussian'``: entries N(0, 1/k), the JL construction. ``'sparse'``: Achlioptas'
    ``±sqrt(3/k)`` with probability 1/6 each, else 0 (same variance, 2/3 zeros).
    ``'orthogonal'``: k orthonormal directions scaled by ``sqrt(d/k)``. All keep squared
    norms in expectation. ``n_components='auto'`` takes the smallest k for which the lemma
    guarantees distortion within ``1 ± eps`` for ``n_samples`` points
    (``johnson_lindenstrauss_min_dim``) and refuses when that is not below d.

    >>> RandomProjection(256, random_state=0).fit(X).transform(X).shape   # (n, 256)
    """

    def __init__(self, n_components: int | Literal["auto"] = "auto", eps: float = 0.1,
                 kind: Literal["gaussian", "sparse", "orthogonal"] = "gaussian",
                 random_state: int | np.random.RandomState | None = None):
        self.n_components = n_components
        self.eps = eps
        self.kind = kind
        self.random_state = random_state

    def fit(self, X, y=None):
        check_choice("kind", self.kind, KINDS)
        X = check_matrix(X)
        n, d = X.shape
        if n < 1:
            raise InputError("random projection needs at least 1 sample to know the dimension")
        k = self._k(n, d)
        rng = check_random_state(self.random_state)  # an int seed gives one fixed stream
        if self.kind == "gaussian":
            R = rng.standard_normal((k, d)) / np.sqrt(k)
        elif self.kind == "sparse":
            R = rng.choice([-1.0, 0.0, 1.0], size=(k, d), p=[1 / 6, 2 / 3, 1 / 6]) * np.sqrt(3 / k)
        else:
            Q, r = np.linalg.qr(rng.standard_normal((d, k)))
            Q *= np.sign(np.diag(r))  # makes Q Haar-distributed (QR's signs are not random)
            R = Q.T * np.sqrt(d / k)
        self.components_ = np.ascontiguousarray(R, dtype=np.float32)  # (k, d) as in sklearn
        self.n_features_in_, self.n_components_ = d, k
        return self

    def _k(self, n: int, d: int) -> int:
        if self.n_components == "auto":
            if not (isinstance(self.eps, numbers.Real) and 0 < self.eps < 1):
                raise ParameterError("eps", self.eps, "a float in (0, 1), e.g. 0.1")
            from sklearn.random_projection import johnson_lindenstrauss_min_dim

            k = int(johnson_lindenstrauss_min_dim(n, eps=self.eps))
            if k >= d:
                raise InputError(
                    f"n_components='auto' with eps={self.eps} and n_samples={n} needs "
                    f"k={k} dimensions (johnson_lindenstrauss_min_dim), which is not fewer than "
                    f"the input's d={d}; raise eps or pass an int n_components < {d}"
                )
            return k
        k = self.n_components
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= d:
            raise ParameterError("n_components", k, f"'auto' or an int in 1..{d} (the input has {d} dimensions)")
        return int(k)

    def transform(self, X):
        if "components_" not in self.__dict__:
            raise NotFittedError("this RandomProjection is not fitted yet; call fit first")
        X = check_matrix(X, dim=self.n_features_in_, finite=False, owner="RandomProjection")
        with np.errstate(invalid="ignore", over="ignore"):  # bad rows are named below
            out = X.astype(np.float32, copy=False) @ self.components_.T
        _check_output(out, X)
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # the matrix is float32
        return tags

    def _arrays(self) -> dict[str, np.ndarray]:
        if "components_" not in self.__dict__:
            raise NotFittedError("this RandomProjection is not fitted yet; call fit first")
        return {"components": self.components_}

    def _state(self) -> dict:
        return {}

    def _restore(self, arrays: dict, state: dict, where: str) -> None:
        if "components" not in arrays or arrays["components"].ndim != 2:
            raise FormatError(f"{where}: needs a 2-D array 'components'")
        self.components_ = arrays["components"].astype(np.float32, copy=False)
        self.n_components_, self.n_features_in_ = self.components_.shape


class Normalize(TransformerMixin, BaseEstimator):
    """L2-normalise rows (stateless); rows of norm 0 stay 0. Keeps float32 / float64.

    >>> Normalize().fit_transform(X)   # same shape, unit rows
    """

    def fit(self, X, y=None):
        X = check_matrix(X)
        if not len(X):
            raise InputError("Normalize.fit got 0 samples; expected at least 1")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        X = check_matrix(X, dim=self.__dict__.get("n_features_in_"), owner="Normalize")
        # A scaled norm: divide each row by its largest |entry| first, so that the norm of a
        # large finite row (1e20 and up in float32) does not overflow to inf and the row to 0.
        scale = np.max(np.abs(X), axis=1, keepdims=True) if X.size else np.ones((len(X), 1), X.dtype)
        scale = np.where(scale > 0, scale, 1).astype(X.dtype)
        Y = X / scale
        norms = np.linalg.norm(Y, axis=1, keepdims=True)
        return Y / np.maximum(norms, np.finfo(X.dtype).tiny).astype(X.dtype)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _state(self) -> dict:
        return {"n_features_in": self.__dict__.get("n_features_in_")}

    def _restore(self, arrays: dict, state: dict, where: str) -> None:
        if state.get("n_features_in") is not None:
            self.n_features_in_ = int(state["n_features_in"])


class Chain(TransformerMixin, BaseEstimator):
    """Transforms applied in order; ``fit`` fits each on the output of the previous.

    >>> Chain([Whitening(256), Normalize()]).fit(X).transform(X).shape   # (n, 256)
    """

    def __init__(self, steps: list):
        self.steps = steps

    def fit(self, X, y=None):
        if not self.steps:
            raise InputError("a Chain needs at least one step")
        for step in self.steps:
            X = step.fit(X).transform(X)
        return self

    def transform(self, X):
        for step in self.steps:
            X = step.transform(X)
        return X

    def __sklearn_tags__(self):
        from sklearn.utils import get_tags

        tags = super().__sklearn_tags__()
        kept = ["float64", "float32"]  # a dtype survives the chain only if every step keeps it
        for step in self.steps:
            kept = [d for d in kept if d in get_tags(step).transformer_tags.preserves_dtype]
        tags.transformer_tags.preserves_dtype = kept
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        try:
            for step in self.steps:
                check_is_fitted(step)
        except NotFittedError:
            return False
        return bool(self.steps)

    @property
    def n_features_in_(self) -> int:
        if not self.steps or "n_features_in_" not in self.steps[0].__dict__:
            raise AttributeError("this Chain is not fitted yet, so it has no n_features_in_")
        return self.steps[0].n_features_in_

    @property
    def n_components_(self) -> int | None:
        for step in reversed(self.steps):
            if getattr(step, "n_components_", None) is not None:
                return step.n_components_
        return self.n_features_in_

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
        save_transform(self, path, overwrite)


TRANSFORMS = {c.__name__: c for c in (Whitening, RandomProjection, Normalize)}


def flatten(transform) -> list:
    """The steps of a transform as a flat list (nested chains unrolled; ``None`` -> ``[]``)."""
    if transform is None:
        return []
    if isinstance(transform, Chain):
        return [s for step in transform.steps for s in flatten(step)]
    return [transform]


def _json_params(step) -> dict:
    params = step.get_params(deep=False)
    if "random_state" in params and not isinstance(params["random_state"], (int, type(None))):
        params["random_state"] = None  # a RandomState object: the drawn matrix is saved anyway
    json.dumps(params)  # fail here, not half-way through writing
    return params


def save_transform(transform, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Save a fitted transform or :class:`Chain` as a directory (atomic, versioned; no pickle).

    >>> save_transform(Chain([Whitening(256), Normalize()]).fit(X), "w/")
    """
    _check_savable(transform)
    with atomic_dir(path, overwrite=overwrite, kind=FORMAT) as tmp:
        write_transform(transform, tmp)


def _check_savable(transform) -> list:
    steps = flatten(transform)
    if not steps:
        raise InputError("cannot save an empty Chain")
    for step in steps:
        if type(step).__name__ not in TRANSFORMS:
            raise InputError(f"cannot save transform {type(step).__name__}; known: {', '.join(TRANSFORMS)}")
    return steps


def write_transform(transform, path: str | os.PathLike) -> None:
    """Write the transform's files into the directory ``path`` (created), e.g. inside another
    artifact's new version; :func:`save_transform` is the atomic, stand-alone form."""
    steps = _check_savable(transform)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg_steps = []
    for i, step in enumerate(steps):
        files = {}
        for key, arr in step._arrays().items():
            files[key] = f"step{i}_{key}.npy"
            np.save(path / files[key], np.ascontiguousarray(arr))
        cfg_steps.append({"class": type(step).__name__, "params": _json_params(step), "arrays": files,
                          "state": step._state()})
    write_json(path / "config.json", {
        "format": FORMAT, "format_version": FORMAT_VERSION, "simkit_version": __version__,
        "steps": cfg_steps, "n_features_in": steps[0].__dict__.get("n_features_in_"),
        "n_components": Chain(steps).n_components_,
    })


def load_transform(path: str | os.PathLike, versioned: bool = True) -> Chain:
    """Load what :func:`save_transform` wrote, always as a :class:`Chain`.

    Refuses (naming the file) a missing or foreign ``config.json``, a newer format, unknown
    classes or parameters, unreadable / missing / non-finite arrays and wrong shapes.
    ``versioned=False`` reads ``path`` itself (a transform saved inside another artifact's
    version); otherwise the current version of the transform directory.
    """
    if versioned:
        return load_versioned(path, lambda version: load_transform(version, versioned=False))
    path = Path(path)
    cfg = read_config(path, FORMAT, FORMAT_VERSION)
    where = path / "config.json"
    raw = cfg.get("steps")
    if not isinstance(raw, list) or not raw:
        raise FormatError(f"{where}: 'steps' must be a non-empty list of transform steps")
    steps = []
    for i, s in enumerate(raw):
        cls = TRANSFORMS.get(s.get("class")) if isinstance(s, dict) else None
        if cls is None:
            found = s.get("class") if isinstance(s, dict) else s
            raise FormatError(f"{where}: step {i} has unknown class {found!r}; "
                              f"known: {', '.join(TRANSFORMS)}")
        for key in ("params", "arrays", "state"):
            if not isinstance(s.get(key, {}), dict):
                raise FormatError(f"{where}: step {i} key {key!r} must be an object, found {s[key]!r}")
        try:
            step = cls(**s.get("params", {}))
        except TypeError as e:
            raise FormatError(f"{where}: step {i} ({cls.__name__}) has bad params ({e})") from None
        arrays = {key: _load_array(path, fname, f"{where} step {i}")
                  for key, fname in s.get("arrays", {}).items()}
        try:
            step._restore(arrays, s.get("state", {}), f"{where} step {i} ({cls.__name__})")
        except (KeyError, ValueError, TypeError) as e:
            raise FormatError(f"{where}: step {i} ({cls.__name__}) has a bad state or arrays ({e!r})") from None
        if steps and _out_dim(steps[-1]) is not None and getattr(step, "n_features_in_", None) not in (
                None, _out_dim(steps[-1])):
            raise FormatError(f"{where}: step {i} expects dimension {step.n_features_in_} but "
                              f"step {i - 1} outputs {_out_dim(steps[-1])}")
        steps.append(step)
    return Chain(steps)


def _out_dim(step) -> int | None:
    return getattr(step, "n_components_", None) or step.__dict__.get("n_features_in_")


def _load_array(path: Path, fname, where: str) -> np.ndarray:
    # File names come from the config: plain names inside the directory, nothing else.
    if not isinstance(fname, str) or not re.fullmatch(r"[\w.-]+\.npy", fname) or ".." in fname:
        raise FormatError(f"{where}: bad array file name {fname!r}")
    f = path / fname
    arr = load_npy(f)
    if arr.dtype not in (np.float32, np.float64) or not np.isfinite(arr).all():
        raise FormatError(f"{f}: expected a finite float32/float64 array, found {arr.dtype}")
    return arr


def describe(transform) -> list[dict]:
    """JSON-able summary of a transform chain (for manifests and index configs).

    >>> describe(Chain([Whitening(256), Normalize()]).fit(X))
    [{'class': 'Whitening', 'params': {...}, 'n_features_in': 768, 'n_components': 256}, ...]
    """
    out = []
    for s in flatten(transform):
        params = json.loads(json.dumps(s.get_params(deep=False), default=str))
        out.append({"class": type(s).__name__, "params": params,
                    "n_features_in": s.__dict__.get("n_features_in_"),
                    "n_components": getattr(s, "n_components_", None)})
    return out
