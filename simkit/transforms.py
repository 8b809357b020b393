"""Dimension reducers as scikit-learn estimators: BERT-whitening and JL random projection.

>>> w = Whitening(n_components=256).fit(X)        # X: (n, 768) float32
>>> w.transform(X).shape                          # (n, 256), identity covariance on X
>>> chain = Chain([Whitening(256), Normalize()]).fit(X)
>>> chain.save("w/"); load_transform("w/").transform(X)   # identical outputs

Whitening (Su et al., 2021): ``mu = mean(X)``, ``U, s = svd(cov(X))``, ``W = U / sqrt(s)``,
``y = (x - mu) W[:, :k]``. The transform is one fused GEMM, ``y = x W + b`` with
``b = -mu W``, which saves a pass over ``x``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from . import __version__
from .errors import FormatError, InputError, check_choice
from .fsutil import atomic_dir, read_config, write_json

FORMAT = "simkit-transform"
FORMAT_VERSION = 1


def check_matrix(X, name: str = "X", dim: int | None = None) -> np.ndarray:
    """2-D float array, finite, of the expected dimension (errors name the row / both dims)."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float32)
    if dim is not None and X.shape[1] != dim:
        raise InputError(f"{name} has dimension {X.shape[1]}, but the transform was fitted on dimension {dim}")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise InputError(f"{name} row {int(np.flatnonzero(bad)[0])} contains NaN or inf ({int(bad.sum())} bad rows)")
    return X


class Whitening(TransformerMixin, BaseEstimator):
    """BERT-whitening: centre, decorrelate and rescale to unit variance, keep ``n_components``.

    ``eps`` is the floor on covariance eigenvalues, relative to the largest one: directions
    with less variance than ``eps * s_max`` (a rank-deficient covariance: N < d, duplicates,
    dead dimensions) are scaled by ``1/sqrt(eps * s_max)`` instead of blowing up to inf, and a
    warning says how many there were.
    """

    def __init__(self, n_components: int | None = None, eps: float = 1e-6, dtype: str = "float32"):
        self.n_components = n_components
        self.eps = eps
        self.dtype = dtype

    # -- fitting ----------------------------------------------------------------------
    def fit(self, X, y=None):
        for attr in ("n_samples_seen_", "_sum", "_sumsq"):
            if hasattr(self, attr):
                delattr(self, attr)
        return self.partial_fit(X)

    def partial_fit(self, X, y=None):
        """Accumulate float64 sums of x and x xᵀ over a chunk; memory O(d²) whatever N is."""
        X = check_matrix(X, dim=getattr(self, "n_features_in_", None))
        X64 = X.astype(np.float64, copy=False)
        if not hasattr(self, "n_samples_seen_"):
            d = X.shape[1]
            self.n_features_in_ = d
            self.n_samples_seen_ = 0
            self._mean = np.zeros(d)
            self._m2 = np.zeros((d, d))
        # Chan et al.'s pairwise update of mean and centred second moment: stable in float64
        # where the naive sum-of-squares formula loses digits on large, offset data.
        n_a, n_b = self.n_samples_seen_, X.shape[0]
        if n_b == 0:
            return self
        mean_b = X64.mean(axis=0)
        Xc = X64 - mean_b
        m2_b = Xc.T @ Xc
        delta = mean_b - self._mean
        n = n_a + n_b
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.n_samples_seen_ = n
        self._finalize()
        return self

    def _finalize(self) -> None:
        n, d = self.n_samples_seen_, self.n_features_in_
        if n < 2:
            raise InputError(f"whitening needs at least 2 samples; got {n}")
        k = d if self.n_components is None else int(self.n_components)
        if not 1 <= k <= d:
            raise InputError(f"n_components={self.n_components} is out of range; expected 1..{d} (the input dimension)")
        cov = self._m2 / (n - 1)  # np.cov's default (ddof=1), as in the published code
        s, U = np.linalg.eigh(cov)  # symmetric PSD: eigh == svd, and faster
        order = np.argsort(s)[::-1]
        s, U = np.clip(s[order], 0.0, None), U[:, order]
        # Eigenvectors have arbitrary signs; fix them (largest |entry| positive, as
        # sklearn's svd_flip) so that refits and partial fits give the same output.
        U = U * np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(d)])
        floor = self.eps * max(float(s[0]), np.finfo(np.float64).tiny)
        degenerate = int((s[:k] < floor).sum())
        if degenerate:
            warnings.warn(
                f"covariance is rank-deficient: {degenerate} of {k} kept directions have variance "
                f"below eps*max={floor:.3g} and were floored (n_samples={n}, dim={d})",
                stacklevel=3,
            )
        self.n_degenerate_ = degenerate
        s_floored = np.maximum(s, floor)
        dt = np.dtype(self.dtype)
        self.mean_ = self._mean.astype(dt)
        self.explained_variance_ = s[:k].astype(dt)
        self.components_ = U[:, :k].T.astype(dt)
        self.kernel_ = (U[:, :k] / np.sqrt(s_floored[:k])).astype(dt)
        self.bias_ = (-(self._mean @ (U[:, :k] / np.sqrt(s_floored[:k])))).astype(dt)
        self._inv = (np.sqrt(s_floored[:k])[:, None] * U[:, :k].T).astype(dt) if k == d else None
        self.n_components_ = k

    # -- transforming -----------------------------------------------------------------
    def transform(self, X):
        """``(X - mean_) @ kernel_``, computed as one GEMM ``X @ kernel_ + bias_``."""
        self._check_fitted()
        X = check_matrix(X, dim=self.n_features_in_).astype(self.kernel_.dtype, copy=False)
        out = X @ self.kernel_
        out += self.bias_
        return out

    def inverse_transform(self, Y):
        self._check_fitted()
        if self._inv is None:
            raise InputError(
                f"inverse_transform needs n_components == n_features ({self.n_features_in_}); "
                f"this whitening keeps {self.n_components_}"
            )
        Y = check_matrix(Y, name="Y", dim=self.n_components_)
        return Y @ self._inv + self.mean_

    def _check_fitted(self):
        if not hasattr(self, "kernel_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this Whitening is not fitted yet; call fit or partial_fit first")

    def _arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        return {"mean": self.mean_, "kernel": self.kernel_, "explained_variance": self.explained_variance_}

    def _restore(self, arrays, cfg) -> None:
        self.mean_, self.kernel_ = arrays["mean"], arrays["kernel"]
        self.explained_variance_ = arrays["explained_variance"]
        self.n_features_in_, self.n_components_ = self.kernel_.shape
        self.n_samples_seen_ = cfg.get("n_samples_seen")
        self.n_degenerate_ = cfg.get("n_degenerate", 0)
        self.bias_ = -(self.mean_ @ self.kernel_)
        self.components_ = None
        self._inv = np.linalg.inv(self.kernel_) if self.n_components_ == self.n_features_in_ else None

    def _state(self) -> dict:
        return {"n_samples_seen": getattr(self, "n_samples_seen_", None), "n_degenerate": self.n_degenerate_}


class RandomProjection(TransformerMixin, BaseEstimator):
    """Johnson-Lindenstrauss random projection ``y = x R``.

    ``kind='gaussian'``: entries N(0, 1/k), the JL construction. ``'sparse'``: Achlioptas'
    {±sqrt(3/k), 0} with probabilities 1/6, 2/3, 1/6. ``'orthogonal'``: k orthonormal columns
    scaled by sqrt(d/k). ``n_components='auto'`` takes k from
    ``johnson_lindenstrauss_min_dim(n_samples, eps)``.
    """

    def __init__(
        self,
        n_components: int | Literal["auto"] = "auto",
        eps: float = 0.1,
        kind: Literal["gaussian", "sparse", "orthogonal"] = "gaussian",
        random_state: int | None = None,
    ):
        self.n_components = n_components
        self.eps = eps
        self.kind = kind
        self.random_state = random_state

    def fit(self, X, y=None):
        check_choice("kind", self.kind, ("gaussian", "sparse", "orthogonal"))
        X = check_matrix(X)
        n, d = X.shape
        if self.n_components == "auto":
            from sklearn.random_projection import johnson_lindenstrauss_min_dim

            k = int(johnson_lindenstrauss_min_dim(n, eps=self.eps))
            if k >= d:
                raise InputError(
                    f"n_components='auto' with eps={self.eps} and n_samples={n} needs k={k} "
                    f"dimensions, not fewer than the input's {d}; raise eps or pass an int"
                )
        else:
            k = int(self.n_components)
            if not 1 <= k:
                raise InputError(f"n_components={self.n_components}; expected a positive int or 'auto'")
        rng = np.random.default_rng(self.random_state)
        if self.kind == "gaussian":
            R = rng.standard_normal((d, k)) / np.sqrt(k)
        elif self.kind == "sparse":
            R = rng.choice([-1.0, 0.0, 1.0], size=(d, k), p=[1 / 6, 2 / 3, 1 / 6]) * np.sqrt(3.0 / k)
        else:
            if k > d:
                raise InputError(f"kind='orthogonal' needs n_components <= {d}; got {k}")
            Q, _ = np.linalg.qr(rng.standard_normal((d, k)))
            R = Q * np.sqrt(d / k)
        self.components_ = R.astype(np.float32)
        self.n_features_in_, self.n_components_ = d, k
        return self

    def transform(self, X):
        if not hasattr(self, "components_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this RandomProjection is not fitted yet; call fit first")
        X = check_matrix(X, dim=self.n_features_in_)
        return X.astype(np.float32, copy=False) @ self.components_

    def _arrays(self):
        return {"components": self.components_}

    def _restore(self, arrays, cfg):
        self.components_ = arrays["components"]
        self.n_features_in_, self.n_components_ = self.components_.shape

    def _state(self):
        return {}


class Normalize(TransformerMixin, BaseEstimator):
    """L2-normalise rows (stateless); rows of norm 0 stay 0."""

    def fit(self, X, y=None):
        self.n_features_in_ = check_matrix(X).shape[1]
        return self

    def transform(self, X):
        X = check_matrix(X, dim=getattr(self, "n_features_in_", None))
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12).astype(X.dtype)

    def _arrays(self):
        return {}

    def _restore(self, arrays, cfg):
        self.n_features_in_ = cfg.get("n_features_in")

    def _state(self):
        return {"n_features_in": getattr(self, "n_features_in_", None)}


class Chain(TransformerMixin, BaseEstimator):
    """Transforms applied in order; ``fit`` fits each on the output of the previous."""

    def __init__(self, steps: list):
        self.steps = steps

    def fit(self, X, y=None):
        for step in self.steps:
            X = step.fit(X).transform(X)
        return self

    def transform(self, X):
        for step in self.steps:
            X = step.transform(X)
        return X

    @property
    def n_components_(self) -> int | None:
        for step in reversed(self.steps):
            if getattr(step, "n_components_", None) is not None:
                return step.n_components_
        return getattr(self.steps[0], "n_features_in_", None) if self.steps else None

    def save(self, path, overwrite: bool = False) -> None:
        save_transform(self, path, overwrite)


TRANSFORMS = {c.__name__: c for c in (Whitening, RandomProjection, Normalize)}


def save_transform(transform, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Save a transform or a :class:`Chain` as a directory: ``config.json`` + one .npy per array."""
    steps = transform.steps if isinstance(transform, Chain) else [transform]
    cfg_steps = []
    with atomic_dir(path, overwrite=overwrite) as tmp:
        for i, step in enumerate(steps):
            name = type(step).__name__
            if name not in TRANSFORMS:
                raise InputError(f"cannot save transform {name}; known: {sorted(TRANSFORMS)}")
            files = {}
            for key, arr in step._arrays().items():
                fname = f"step{i}_{key}.npy"
                np.save(tmp / fname, np.ascontiguousarray(arr))
                files[key] = fname
            cfg_steps.append({"class": name, "params": step.get_params(), "arrays": files, "state": step._state()})
        write_json(tmp / "config.json", {"format": FORMAT, "format_version": FORMAT_VERSION,
                                         "simkit_version": __version__, "steps": cfg_steps})


def load_transform(path: str | os.PathLike) -> Chain:
    """Load what :func:`save_transform` wrote, always as a :class:`Chain`."""
    path = Path(path)
    cfg = read_config(path, FORMAT, FORMAT_VERSION)
    steps = []
    for i, s in enumerate(cfg.get("steps", [])):
        cls = TRANSFORMS.get(s.get("class"))
        if cls is None:
            raise FormatError(f"{path / 'config.json'}: step {i} has unknown class {s.get('class')!r}; known: {sorted(TRANSFORMS)}")
        step = cls(**s.get("params", {}))
        arrays = {}
        for key, fname in s.get("arrays", {}).items():
            f = path / fname
            try:
                arrays[key] = np.load(f, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise FormatError(f"{f}: cannot read array ({e})") from None
        step._restore(arrays, s.get("state", {}))
        steps.append(step)
    return Chain(steps)


def describe(transform) -> list[dict]:
    """JSON-able summary of a transform chain (for manifests and index configs)."""
    steps = transform.steps if isinstance(transform, Chain) else [transform]
    return [{"class": type(s).__name__, **json.loads(json.dumps(s.get_params(), default=str)),
             "n_components": getattr(s, "n_components_", None)} for s in steps]
