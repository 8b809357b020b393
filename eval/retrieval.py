"""Pair retrieval: the FAQ job users run, measured on STS pair files.

For one task split: the corpus is every distinct sentence of the split; a query is sentence 1
of a positive pair (label >= ``threshold``); its relevant documents are every sentence it is
paired with positively. The query's own entry is left out of its ranking (a query whose only
positive partner is itself is skipped). Scores are R@1, R@10 and MRR (x 100, MRR cut at 100),
so a model is compared with the weight-free TF-IDF baseline on the same queries.

>>> queries = retrieval_queries(load_task("data/chinese-sts", "BQ", "valid"), n_queries=2000)
>>> retrieval_scores(encoder, queries)          # {"R@1": ..., "R@10": ..., "MRR": ..., "n": ...}
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from simkit.errors import InputError

from .baseline import NAME as TFIDF
from .baseline import TfidfEncoder
from .data import PairDataset, unique_texts

CUTOFF = 100  # MRR@100: a relevant document below rank 100 scores 0


@dataclasses.dataclass
class RetrievalQueries:
    task: str
    corpus: list[str]
    queries: np.ndarray            # corpus rows of the query sentences
    relevant: list[np.ndarray]     # corpus rows relevant to each query (never the query itself)


def retrieval_queries(ds: PairDataset, n_queries: int | None = 2000, threshold: float | None = None,
                      seed: int = 0) -> RetrievalQueries:
    """The queries of a pair dataset (a seeded sample of ``n_queries``; ``None`` = all).

    ``threshold`` defaults to 1 for 0/1 tasks and 4 for STS-B's 0-5 scale.
    """
    threshold = threshold if threshold is not None else (4.0 if float(ds.labels.max(initial=0)) > 1 else 1.0)
    corpus, (a, b) = unique_texts(ds.sentences1, ds.sentences2)
    partners: dict[int, set[int]] = defaultdict(set)
    for i, j, y in zip(a.tolist(), b.tolist(), ds.labels.tolist()):
        if y >= threshold and i != j:
            partners[i].add(j)
    first = list(dict.fromkeys(i for i, y in zip(a.tolist(), ds.labels.tolist()) if y >= threshold))
    qs = [i for i in first if partners.get(i)]
    if not qs:
        raise InputError(f"{ds.path}: no positive pair (label >= {threshold:g}) with two different sentences")
    rng = np.random.default_rng(seed)
    if n_queries is not None and len(qs) > n_queries:
        qs = sorted(rng.choice(qs, n_queries, replace=False).tolist())
    return RetrievalQueries(ds.task, corpus, np.asarray(qs, dtype=np.int64),
                            [np.asarray(sorted(partners[q]), dtype=np.int64) for q in qs])


def _ranks(scores: np.ndarray, q: RetrievalQueries) -> np.ndarray:
    """1-based rank of the best relevant document of each query (the query itself excluded)."""
    scores = np.array(scores, dtype=np.float64)
    scores[np.arange(len(q.queries)), q.queries] = -np.inf
    out = np.empty(len(q.queries), dtype=np.int64)
    for r, rel in enumerate(q.relevant):
        best = scores[r, rel].max()
        out[r] = 1 + int((scores[r] > best).sum())  # ties count in the query's favour, as FAISS-free ranking
    return out


def retrieval_scores(encoder, q: RetrievalQueries, batch_size: int = 64, bootstrap: int = 0,
                     seed: int = 0) -> dict:
    """R@1, R@10 and MRR@100 (x 100) of ``encoder`` (anything with ``encode``, or ``"tfidf"``);
    with ``bootstrap`` resamples of the queries, ``MRR_ci``: the 95 % percentile interval."""
    if encoder == TFIDF:
        tf = TfidfEncoder().fit(q.corpus)
        D = tf.transform(q.corpus)
        scores = (D[q.queries] @ D.T).toarray()
    else:
        X = np.asarray(encoder.encode(q.corpus, batch_size=batch_size, show_progress_bar=False), dtype=np.float64)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        scores = X[q.queries] @ X.T
    ranks = _ranks(scores, q)
    rr = np.where(ranks <= CUTOFF, 1.0 / ranks, 0.0)
    out = {"R@1": float((ranks <= 1).mean() * 100), "R@10": float((ranks <= 10).mean() * 100),
           "MRR": float(rr.mean() * 100), "n": len(ranks), "corpus": len(q.corpus)}
    if bootstrap:
        out["MRR_ci"] = mean_interval(rr * 100, bootstrap, seed)
    return out


def mean_interval(values: np.ndarray, bootstrap: int, seed: int = 0) -> list[float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` (per-query scores). The
    same seed for every model of a task pairs the resamples across models."""
    idx = np.random.default_rng(seed).integers(0, len(values), size=(bootstrap, len(values)))
    means = np.asarray(values, dtype=np.float64)[idx].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def run_retrieval(specs, data_dir, tasks=("ATEC", "BQ", "LCQMC"), splits=("valid",), n_queries: int | None = 2000,
                  seed: int = 0, data_format: str = "auto", batch_size: int = 64,
                  bootstrap: int = 0) -> list[dict]:
    """One row per (model, task, split): the scores of :func:`retrieval_scores`.

    ``specs`` are :class:`~simkit_eval.grid.ModelSpec` (``encoder=None`` is the TF-IDF
    baseline); every model answers the same sampled queries.
    """
    from .data import load_task

    rows = []
    for task in tasks:
        for split in splits:
            q = retrieval_queries(load_task(data_dir, task, split, data_format), n_queries, seed=seed)
            for spec in specs:
                enc = TFIDF if spec.encoder is None else spec.encoder
                rows.append({"model": spec.name, "task": task, "split": split,
                             **retrieval_scores(enc, q, batch_size, bootstrap, seed)})
    return rows
