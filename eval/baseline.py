"""A baseline that needs no weights: character TF-IDF vectors and their cosine.

>>> enc = TfidfEncoder().fit(texts)               # sublinear-tf char unigrams, IDF from texts
>>> enc.similarity(["花呗怎么还"], ["花呗如何还款"])   # array([0.6...])

Every table gets a row anyone can reproduce offline. The IDF is fitted on the task's own
sentences (the same set the whitening is fitted on), as an unsupervised encoder would be.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simkit.errors import InputError

NAME = "tfidf"


class TfidfEncoder:
    """Sublinear-tf (1 + log tf), smoothed-IDF, L2-normalised character n-gram vectors."""

    def __init__(self, ngram_range: tuple[int, int] = (1, 1), sublinear_tf: bool = True):
        self.ngram_range = ngram_range
        self.sublinear_tf = sublinear_tf

    def fit(self, texts: Sequence[str]) -> TfidfEncoder:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not len(texts):
            raise InputError("TF-IDF needs at least one text to fit on")
        self.vectorizer_ = TfidfVectorizer(analyzer="char", ngram_range=tuple(self.ngram_range),
                                           sublinear_tf=self.sublinear_tf, norm="l2")
        self.vectorizer_.fit(texts)
        self.n_features_ = len(self.vectorizer_.vocabulary_)
        return self

    def transform(self, texts: Sequence[str]):
        """Sparse CSR (n, n_features), rows of unit norm (or 0 for texts of unseen chars only)."""
        if not hasattr(self, "vectorizer_"):
            raise InputError("TfidfEncoder is not fitted; call fit(texts) first")
        return self.vectorizer_.transform(texts)

    def similarity(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Row-wise cosine of the pairs (a[i], b[i]): (n,) float64."""
        if len(a) != len(b):
            raise InputError(f"need as many first as second sentences; got {len(a)} and {len(b)}")
        A, B = self.transform(a), self.transform(b)
        return np.asarray(A.multiply(B).sum(axis=1), dtype=np.float64).ravel()
