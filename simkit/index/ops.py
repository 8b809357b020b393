"""Changes to a saved index as one read-modify-write under the index's writer lock.

Two processes adding to one index at once both keep their documents: the second waits for
the first (up to ``timeout`` seconds, then an :class:`~simkit.errors.InputError` saying
another writer holds the lock) and then loads the version the first one saved.

>>> add_to_index("idx/", X, ids=["a", "b"], texts=["...", "..."])   # doctest: +SKIP
{'added': 2, 'count_before': 10, 'count': 12}
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..fsutil import artifact_lock
from .base import load_index


def add_to_index(path: str | os.PathLike, vectors, ids: Sequence | None, texts: Sequence[str] | None = None,
                 metadata: Sequence[dict] | None = None, upsert: bool = False,
                 timeout: float | None = None, pipeline=None) -> dict:
    """Lock the index, load its newest version, add (or upsert) the documents, save a new version.

    Returns ``{"added", "count_before", "count"}``. ``timeout``: seconds to wait for another
    writer (default ``$SIMKIT_LOCK_TIMEOUT`` or 60), then an InputError. ``pipeline``: the one
    that made ``vectors``; refused if the newest version was built by another.
    """
    with artifact_lock(path, timeout=timeout):
        index = load_index(path)
        if pipeline is not None and index.pipeline_ is not None:
            from .build import check_same_pipeline

            check_same_pipeline(index.pipeline_, pipeline, f"the index {path}")
        before = len(index)
        (index.upsert if upsert else index.add)(vectors, ids, texts, metadata)
        index.save(path, overwrite=True)
        return {"added": len(index) - before if not upsert else _count(ids, vectors),
                "count_before": before, "count": len(index)}


def remove_from_index(path: str | os.PathLike, ids: Sequence,
                      timeout: float | None = None) -> dict:
    """Lock the index, load its newest version, remove ``ids`` (an unknown id is an error), save.

    Returns ``{"removed", "count_before", "count"}``.
    """
    with artifact_lock(path, timeout=timeout):
        index = load_index(path)
        before = len(index)
        removed = index.remove(ids)
        index.save(path, overwrite=True)
        return {"removed": removed, "count_before": before, "count": len(index)}


def _count(ids, vectors) -> int:
    if ids is not None:
        return len(ids)
    return len(vectors)
