"""STS scores: Spearman (main score) and Pearson of pair similarities against gold labels.

>>> s = sts_scores(a, b, labels)          # a, b: (n, d) float32, labels: (n,)
>>> s["main_score"] == s["cosine_spearman"]
True

Spearman is ``scipy.stats.spearmanr`` (ties get their average rank), as in the reference
code (BERT-whitening ``compute_corrcoef``) and in MTEB / sentence-transformers. Ties stay
ties: similarities are rounded to 12 significant digits before ranking (:func:`tie_round`).
Two identical sentences have cosine 1 in exact arithmetic, but a float64 cosine spreads them
over 1 ± 7e-16, and Spearman would rank them by that noise; mteb's float32 cosine gives them
all exactly 1.0 (PAWSX has 74 such pairs: the noise moved its score by 1.8e-4). Rounding
merges only what differs by less than 1e-12 relative, so real differences (a random model's
cosines can differ by 1e-6, below float32's resolution) keep their order. On pairs with
identical sentences the scores equal mteb 2.x's own STS evaluation to 1e-6
(``tests/test_mteb.py``). They differ where distinct pairs' cosines lie within float32
rounding of each other: mteb ties those as well (seen only on random-weight models, whose
CLS cosines all lie within ~1e-6; measured up to 1.7e-3 there).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

from simkit.errors import InputError


def _check(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape != y.shape or x.ndim != 1:
        raise InputError(f"scores and labels must be 1-D of the same length; got {x.shape} and {y.shape}")
    if x.size < 2:
        raise InputError(f"a correlation needs at least 2 pairs; got {x.size}")


TIE_DIGITS = 12


def tie_round(x, digits: int = TIE_DIGITS) -> np.ndarray:
    """``x`` (float64) rounded to ``digits`` significant digits, so rounding noise makes ties.

    >>> tie_round([0.9999999999999993, 1.0000000000000007]).tolist()   # [1.0, 1.0]

    Rounding is monotone: it can merge values closer than ~1e-12 relative, never reorder them.
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.floor(np.log10(np.abs(x)))
    scale = 10.0 ** (digits - 1 - np.where(np.isfinite(mag), mag, 0))
    return np.where(np.isfinite(x), np.round(x * scale) / scale, x)


def spearman(x, y) -> float:
    """Spearman's rho with average ranks for ties; NaN (with a warning) if either side is constant.

    Both sides go through :func:`tie_round` first (see module doc).
    """
    x, y = tie_round(x), tie_round(y)
    _check(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        r = float(stats.spearmanr(x, y).statistic)
    if np.isnan(r):
        warnings.warn("spearman: one side is constant; the correlation is undefined (NaN)", stacklevel=2)
    return r


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _check(x, y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        warnings.warn("pearson: one side is constant; the correlation is undefined (NaN)", stacklevel=2)
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays, in float64 (zero rows give 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"a and b must be 2-D of the same shape; got {a.shape} and {b.shape}")
    na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
    return np.einsum("ij,ij->i", a, b) / (na * nb)


def sts_scores(a: np.ndarray, b: np.ndarray, labels, distances: bool = True) -> dict[str, float]:
    """MTEB's STS metrics for pairs (a[i], b[i]) with gold ``labels``.

    ``main_score`` is ``cosine_spearman``. ``distances`` adds the euclidean / manhattan
    scores (negated distances) MTEB also reports.
    """
    labels = np.asarray(labels, dtype=np.float64)
    out = similarity_scores(cosine_pairs(a, b), labels)
    if distances:
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        euc = -np.linalg.norm(a64 - b64, axis=1)
        man = -np.abs(a64 - b64).sum(axis=1)
        out.update(euclidean_spearman=spearman(euc, labels), euclidean_pearson=pearson(euc, labels),
                   manhattan_spearman=spearman(man, labels), manhattan_pearson=pearson(man, labels))
    out["main_score"] = out["cosine_spearman"]
    return out


def similarity_scores(cos, labels) -> dict[str, float]:
    """Scores from precomputed pair cosines (e.g. of sparse TF-IDF vectors)."""
    rho = spearman(cos, labels)
    return {"cosine_spearman": rho, "cosine_pearson": pearson(cos, labels), "main_score": rho}


def bootstrap_spearman(x, y, n_resamples: int = 1000,
                       random_state: int | Sequence[int] | np.random.Generator | None = 0,
                       chunk: int = 64) -> np.ndarray:
    """Spearman's rho of ``n_resamples`` bootstrap resamples of the pairs (drawn with replacement).

    >>> r = bootstrap_spearman(cos, labels, n_resamples=1000)   # (1000,)
    >>> low, high = np.nanpercentile(r, [2.5, 97.5])            # a 95 % percentile interval

    The report sizes of some STS tasks are small (PAWSX and STS-B have a few hundred to two
    thousand pairs), so a score difference of a point or two can be noise; the interval says
    how much. A resample whose scores or labels are constant gives NaN.
    """
    x, y = tie_round(x), tie_round(y)  # the same ties as spearman()
    _check(x, y)
    if n_resamples < 1:
        raise InputError(f"n_resamples must be >= 1; got {n_resamples}")
    rng = np.random.default_rng(random_state)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):  # chunks bound the (chunk, n) rank matrices
        idx = rng.integers(0, x.size, size=(min(chunk, n_resamples - start), x.size))
        rx = stats.rankdata(x[idx], axis=1)  # average ranks for ties, as in spearman()
        ry = stats.rankdata(y[idx], axis=1)
        rx -= rx.mean(axis=1, keepdims=True)
        ry -= ry.mean(axis=1, keepdims=True)
        den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + len(idx)] = np.where(den > 0, (rx * ry).sum(axis=1) / den, np.nan)
    return out


def averages(scores: Sequence[float], n_pairs: Sequence[int]) -> dict[str, float]:
    """Plain and pair-count-weighted averages (the reference reports both).

    >>> averages([0.2, 0.6], [100, 300])   # {'avg': 0.4, 'weighted_avg': 0.5}
    """
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(n_pairs, dtype=np.float64)
    if s.shape != w.shape or s.size == 0:
        raise InputError(f"need one pair count per score; got {s.size} scores and {w.size} counts")
    return {"avg": float(s.mean()), "weighted_avg": float(np.average(s, weights=w))}
