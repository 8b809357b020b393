"""Evaluators for training: valid pair files scored through the STS harness.

>>> evaluate = pairs_evaluator(["ATEC.valid.data", "BQ.valid.data"])   # doctest: +SKIP
>>> evaluate(encoder)["main_score"]     # mean Spearman x 100 over the files
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .data import read_pairs_tsv
from .scoring import sts_scores


def pairs_evaluator(files: Sequence[str | Path], batch_size: int = 64) -> Callable[[object], dict]:
    """A function ``encoder -> {"main_score", <file name>: score, ...}`` (Spearman x 100)."""
    sets = {Path(f).name: read_pairs_tsv(f, task=Path(f).stem, split="valid", header=False) for f in files}

    def evaluate(encoder) -> dict:
        scores = {}
        for name, ds in sets.items():
            a = encoder.encode(ds.sentences1, batch_size=batch_size, show_progress_bar=False)
            b = encoder.encode(ds.sentences2, batch_size=batch_size, show_progress_bar=False)
            scores[name] = sts_scores(a, b, ds.labels, distances=False)["main_score"] * 100
        return {"main_score": float(np.mean(list(scores.values()))), **scores}

    return evaluate
