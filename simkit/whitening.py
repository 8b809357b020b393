"""BERT-whitening as a scikit-learn transformer, fitted in one pass or streamed in chunks.

>>> w = Whitening(n_components=256).fit(X)       # X: (n, 768) float32
>>> w.transform(X).shape                         # (n, 256), identity covariance on X
>>> w2 = Whitening(256)
>>> for chunk in chunks: w2.partial_fit(chunk)   # same result, memory O(d²) whatever n is

Su et al. (2021): ``mu = mean(X)``, ``U, s = svd(cov(X))``, ``W = U / sqrt(s)``,
``y = (x - mu) W[:, :k]``, with ``cov`` = ``np.cov`` (ddof=1) as in the published code.
Import from :mod:`simkit.transforms`; :func:`check_matrix` lives here so that both modules
use it without an import cycle.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from scipy.linalg import blas, eigh
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from threadpoolctl import threadpool_limits

from .errors import FormatError, InputError, ParameterError, check_choice

# Rows per float64 block in the moment update: 4096 x 768 x 8 B = 25 MB of scratch, which
# keeps streaming under 64 MB at d = 768; measured ~15% faster than 2048 and than 8192.
BLOCK_ROWS = 4096

# Learned attributes computed from the moments by _solve(); after partial_fit they are
# computed on first access (see __getattr__), so streaming pays one eigh, not one per chunk.
_SOLVED = ("mean_", "kernel_", "bias_", "components_", "explained_variance_",
           "explained_variance_ratio_", "n_components_", "n_degenerate_", "variance_floor_")


def check_matrix(X, name: str = "X", dim: int | None = None, finite: bool = True,
                 owner: str = "the transform") -> np.ndarray:
    """``X`` as a 2-D float array of dimension ``dim``; errors name the bad row / both dims.

    >>> check_matrix([[1, 2], [3, 4]]).dtype        # float32 (ints are converted)
    """
    if hasattr(X, "tocsr") and hasattr(X, "nnz"):  # scipy.sparse, without importing it
        raise InputError(f"{name} is a sparse matrix; transforms need a dense array (X.toarray())")
    try:
        X = np.asarray(X)
    except (ValueError, TypeError) as e:
        raise InputError(f"{name} cannot be read as a 2-D float array ({e})") from None
    # Wording kept close to scikit-learn's own messages, which its estimator checks match.
    if X.ndim != 2:
        raise InputError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}. "
                         "Reshape your data, e.g. X.reshape(1, -1) for a single sample")
    if X.shape[1] == 0:
        raise InputError(f"{name} has 0 feature(s) (shape={X.shape}) while a minimum of 1 is "
                         "required.")
    if np.iscomplexobj(X):
        raise InputError(f"{name} has dtype {X.dtype}: Complex data not supported; "
                         "expected real floats")
    if X.dtype not in (np.float32, np.float64):
        try:
            X = X.astype(np.float32)
        except (ValueError, TypeError) as e:
            raise InputError(f"{name} has dtype {X.dtype}, which is not numeric ({e})") from None
    if dim is not None and X.shape[1] != dim:
        raise InputError(
            f"{name} has {X.shape[1]} features, but {owner} is expecting {dim} features as input "
            f"(it was fitted on dimension {dim})"
        )
    # A row sum is non-finite whenever the row holds NaN/inf; it is one cheap reduction
    # with no n x d boolean temporary. Only then look for the row (or find an overflow).
    if finite:
        with np.errstate(invalid="ignore", over="ignore"):
            sums = X.sum(axis=1)
        if not np.isfinite(sums).all():
            raise_if_not_finite(X, name)
    return X


def raise_if_not_finite(X: np.ndarray, name: str = "X", rows: np.ndarray | None = None) -> None:
    """Raise naming the first row of ``X`` (among ``rows``) holding NaN or inf."""
    idx = np.arange(len(X)) if rows is None else rows
    bad = idx[~np.isfinite(X[idx]).all(axis=1)]
    if len(bad):
        raise InputError(f"{name} row {int(bad[0])} contains NaN or inf ({len(bad)} bad rows)")


F32_MAX = float(np.finfo(np.float32).max)


def check_magnitude(X: np.ndarray, name: str = "X", offset: int = 0) -> None:
    """Refuse rows whose squared norm overflows float32 (|x|² > 3.4e38), naming the first.

    Such values are finite but unusable: a covariance, a norm or an inner product of them
    overflows, and the fit silently degrades (a 1e38 entry made every output zero).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        # float32 rows: a norm that overflows is inf in float32 and a NaN stays NaN, so the
        # float32 sum flags the same rows as a float64 one, at a fifth of the cost.
        sq = np.einsum("ij,ij->i", X, X, dtype=np.float32 if X.dtype == np.float32 else np.float64)
    bad = ~(sq <= F32_MAX)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        if not np.isfinite(X[row]).all():
            raise InputError(f"{name} row {offset + row} contains NaN or inf ({int(bad.sum())} bad rows)")
        raise InputError(f"{name} row {offset + row} is too large: its squared norm "
                         f"{float(np.dot(X[row].astype(np.float64), X[row])):.3g} overflows "
                         "float32 (above 3.4e38); scale the vectors down")


class Whitening(TransformerMixin, BaseEstimator):
    """BERT-whitening: centre, decorrelate and rescale to unit variance, keep ``n_components``.

    ``eps`` floors the covariance eigenvalues at ``eps * s_max`` (``s_max`` the largest):
    a rank-deficient covariance (N < d, duplicate rows, a dead dimension) has eigenvalues
    of 0 up to rounding, and ``1/sqrt(0)`` would be inf. Kept directions under the floor
    are scaled by ``1/sqrt(eps * s_max)`` instead, and a warning gives their count
    (``n_degenerate_``). ``dtype`` is the dtype of the learned arrays and of the output.

    Moments are accumulated in float64 (Chan et al.'s pairwise update of the mean and the
    centred second moment, block by block), so ``fit(X)`` and ``partial_fit`` over any
    chunking agree to rounding, and memory is O(d²) plus one block.
    """

    def __init__(self, n_components: int | None = None, eps: float = 1e-6,
                 dtype: str = "float32"):
        self.n_components = n_components
        self.eps = eps
        self.dtype = dtype

    # -- fitting ------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Fit on all of ``X`` at once (read block by block: a memmap is never copied whole)."""
        self._reset()
        X = check_matrix(X, finite=False)  # _accumulate's check_magnitude names bad rows
        if X.shape[0] < 2:
            raise InputError(f"whitening needs at least 2 samples; got {X.shape[0]} sample"
                             + ("s" if X.shape[0] != 1 else ""))
        self._start(X.shape[1])
        self._accumulate(X)
        self._solve()
        return self

    def partial_fit(self, X, y=None):
        """Add a chunk to the running moments; the kernel is solved when first needed."""
        if "_m2" not in self.__dict__ and "n_features_in_" in self.__dict__:
            raise InputError("this Whitening was loaded from disk without its moments; "
                             "refit it with fit / partial_fit on the data")
        first = "_m2" not in self.__dict__
        X = check_matrix(X, dim=None if first else self.n_features_in_, owner="Whitening",
                         finite=False)
        if first:
            self._start(X.shape[1])
        self._accumulate(X)
        for name in _SOLVED:
            self.__dict__.pop(name, None)
        self._stale = True
        return self

    def _reset(self) -> None:
        for name in (*_SOLVED, "n_features_in_", "n_samples_seen_", "_mean", "_m2", "_stale"):
            self.__dict__.pop(name, None)

    def _start(self, d: int) -> None:
        check_choice("dtype", self.dtype, ("float32", "float64"))
        if not (isinstance(self.eps, numbers.Real) and 0 < self.eps < 1):
            raise ParameterError("eps", self.eps, "a float in (0, 1), e.g. 1e-6")
        self._k(d)  # fail on a bad n_components before reading any data
        self.n_features_in_ = d
        self.n_samples_seen_ = 0
        self._mean = np.zeros(d)
        self._m2 = np.zeros((d, d), order="F")  # upper triangle only; F order for BLAS in place

    def _k(self, d: int) -> int:
        k = self.n_components
        if k is None:
            return d
        if not isinstance(k, numbers.Integral) or isinstance(k, bool):
            raise ParameterError("n_components", k, f"an int in 1..{d} or None (keep all)")
        if not 1 <= k <= d:
            raise ParameterError("n_components", k, f"1..{d} (the input has {d} dimensions)")
        return int(k)

    def _accumulate(self, X: np.ndarray) -> None:
        buf = np.empty((min(BLOCK_ROWS, len(X)), X.shape[1]))
        for start in range(0, len(X), BLOCK_ROWS):
            block = X[start:start + BLOCK_ROWS]
            check_magnitude(block, offset=start)
            n_a, n_b = self.n_samples_seen_, len(block)
            mean_b = block.mean(axis=0, dtype=np.float64)
            centred = buf[:n_b]
            np.subtract(block, mean_b, out=centred)
            # syrk: m2 += Cᵀ C on the upper triangle only (half the flops of a GEMM), in place.
            self._m2 = blas.dsyrk(1.0, centred.T, beta=1.0, c=self._m2, trans=0, lower=0,
                                  overwrite_c=1)
            n = n_a + n_b
            delta = mean_b - self._mean
            if n_a:  # Chan's merge term n_a n_b / n · δ δᵀ, again upper triangle in place
                self._m2 = blas.dsyr(n_a * n_b / n, delta, a=self._m2, lower=0, overwrite_a=1)
            self._mean += delta * (n_b / n)
            self.n_samples_seen_ = n

    def __getattr__(self, name: str):
        # Only called when normal lookup fails: solve lazily after partial_fit.
        if name in _SOLVED and self.__dict__.get("_stale"):
            self._solve()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def finalize(self) -> Whitening:
        """Solve for the kernel now, after the last ``partial_fit`` (else on first use)."""
        self._solve()
        return self

    def _solve(self) -> None:
        n, d = self.n_samples_seen_, self.n_features_in_
        if n < 2:
            raise InputError(f"whitening needs at least 2 samples; got {n} sample"
                             + ("s" if n != 1 else ""))
        k = self._k(d)
        upper = np.triu(self._m2)
        cov = (upper + np.triu(upper, 1).T) / (n - 1)  # np.cov's ddof=1, as published
        # Symmetric PSD: eigh == svd, and cheaper. One BLAS thread: a d x d eigh is mostly
        # level-2 work that gains little from threads, and on busy cores it was measured 4-7x
        # slower with 2 threads than with 1 (d=768: 1.5 s vs 0.2 s under load).
        with threadpool_limits(1, user_api="blas"):
            s, U = eigh(cov, overwrite_a=True, check_finite=False, driver="evd")
        s, U = np.clip(s[::-1], 0.0, None), U[:, ::-1]  # descending variance
        # Eigenvectors have arbitrary signs: make each one's largest |entry| positive (as
        # sklearn's svd_flip does for PCA) so that refits and partial fits give one output.
        U *= np.sign(U[np.argmax(np.abs(U), axis=0), np.arange(d)])
        # Below float32's smallest normal the data are constant: use eps itself as the floor.
        floor = self.eps * s[0] if s[0] > np.finfo(np.float32).tiny else self.eps
        below = s < floor
        degenerate = int(below[:k].sum())
        if degenerate:
            # n centred rows span at most n - 1 directions: the rest of the fit is rounding,
            # and the cure is more rows, not a different eps
            few = (f"; {n} samples span at most {n - 1} of {d} directions: fit on more "
                   f"samples than dimensions, or keep n_components below {n}") if n <= d else ""
            warnings.warn(
                f"whitening: the covariance is rank-deficient: {degenerate} of the {k} kept "
                f"directions ({int(below.sum())} of all {d}) have variance below eps * largest "
                f"= {floor:.3g} and are scaled by 1/sqrt({floor:.3g}) instead "
                f"(n_samples={n}, dim={d}){few}",
                stacklevel=3,
            )
        scale = 1.0 / np.sqrt(np.maximum(s[:k], floor))
        kernel = U[:, :k] * scale
        dt = np.dtype(self.dtype)
        self.mean_ = self._mean.astype(dt)
        self.kernel_ = np.ascontiguousarray(kernel, dtype=dt)
        self.bias_ = (-(self._mean @ kernel)).astype(dt)  # folds the mean into one GEMM
        self.components_ = np.ascontiguousarray(U[:, :k].T, dtype=dt)
        self.explained_variance_ = s[:k].astype(dt)
        total = s.sum()
        self.explained_variance_ratio_ = (s[:k] / total if total > 0 else np.zeros(k)).astype(dt)
        self.n_components_ = k
        self.n_degenerate_ = degenerate
        self.variance_floor_ = float(floor)
        self._stale = False

    # -- transforming -------------------------------------------------------------------
    def transform(self, X):
        """``(X - mean_) @ kernel_``, computed as one GEMM ``X @ kernel_ + bias_``."""
        kernel = self._fitted("kernel_")
        X = check_matrix(X, dim=self.n_features_in_, finite=False, owner="Whitening")
        with np.errstate(invalid="ignore", over="ignore"):  # bad rows are named below
            out = X.astype(kernel.dtype, copy=False) @ kernel
            out += self.bias_
        _check_output(out, X)
        return out

    def inverse_transform(self, X):
        """Back to the input space; exact only when ``n_components_ == n_features_in_``."""
        components = self._fitted("components_")
        if self.n_components_ != self.n_features_in_:
            raise InputError(
                f"inverse_transform needs n_components == n_features ({self.n_features_in_}); "
                f"this whitening keeps {self.n_components_} (the dropped directions are lost)"
            )
        Y = check_matrix(X, dim=self.n_components_, owner="Whitening.inverse_transform")
        scale = np.sqrt(np.maximum(self.explained_variance_.astype(np.float64),
                                   self.variance_floor_))
        inv = (scale[:, None] * components).astype(components.dtype)
        return Y.astype(components.dtype, copy=False) @ inv + self.mean_

    def _fitted(self, name: str) -> np.ndarray:
        if "n_features_in_" not in self.__dict__:
            raise NotFittedError("this Whitening is not fitted yet; call fit or partial_fit first")
        return getattr(self, name)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = [self.dtype]  # output dtype is self.dtype
        return tags

    # -- saving (see simkit.transforms.save_transform) ----------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        return {name: self._fitted(name + "_") for name in
                ("mean", "kernel", "bias", "components", "explained_variance",
                 "explained_variance_ratio")}

    def _state(self) -> dict:
        return {"n_features_in": self.n_features_in_, "n_samples_seen": self.n_samples_seen_,
                "n_degenerate": self.n_degenerate_, "variance_floor": self.variance_floor_}

    def _restore(self, arrays: dict, state: dict, where: str) -> None:
        d, k = arrays["kernel"].shape
        _check_shapes(arrays, {"mean": (d,), "bias": (k,), "components": (k, d),
                               "explained_variance": (k,), "explained_variance_ratio": (k,)},
                      where)
        for name, arr in arrays.items():
            self.__dict__[name + "_"] = arr
        self.n_features_in_, self.n_components_ = d, k
        self.n_samples_seen_ = state.get("n_samples_seen")
        self.n_degenerate_ = state.get("n_degenerate", 0)
        self.variance_floor_ = float(state.get("variance_floor", 0.0))


def _check_output(out: np.ndarray, X: np.ndarray, name: str = "X") -> None:
    """Non-finite output rows come from NaN/inf input rows: name the first such row."""
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.isfinite(out.sum(axis=1))
    if not ok.all():
        raise_if_not_finite(X, name, rows=np.flatnonzero(~ok))
        raise InputError(f"{name}: the transform overflowed (values too large for {out.dtype})")


def _check_shapes(arrays: dict, expected: dict, where: str) -> None:
    for name, shape in expected.items():
        if name not in arrays:
            raise FormatError(f"{where}: array {name!r} is missing")
        if arrays[name].shape != shape:
            raise FormatError(f"{where}: array {name!r} has shape {arrays[name].shape}, "
                              f"expected {shape}")
