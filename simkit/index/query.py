"""Queries from the places users keep them: one text, a file of texts, or a .npy of vectors.

>>> for row in search_inputs(index, queries="questions.txt", top_k=5):   # doctest: +SKIP
...     print(row["query"], row["results"][0]["id"])
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..corpus import CorpusFormat, read_corpus
from ..errors import InputError, no_file


def load_query_vectors(file: str | os.PathLike) -> np.ndarray:
    """(n, d) vectors from a .npy file (1-D: one query); errors name the file."""
    try:
        q = np.load(file, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError):
        raise no_file(file) from None
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{file}: not a readable .npy file ({e})") from None
    return q[None, :] if q.ndim == 1 else q


def search_inputs(index, *, text: str | None = None, queries: str | os.PathLike | None = None,
                  vectors: str | os.PathLike | None = None, top_k: int = 10, model: str | None = None,
                  num_threads: int | None = None, format: CorpusFormat = "auto", text_field: str | None = None,
                  batch_size: int = 32, **params) -> Iterator[dict]:
    """Search ``index`` for exactly one of: ``text``, the texts of the file ``queries``, or the
    vectors of ``vectors`` (.npy). Yields ``{"query", ["query_id"], "results"}`` per query.

    ``model`` says where the index's model is now (it must have the recorded weights).
    """
    if sum(x is not None for x in (text, queries, vectors)) != 1:
        raise InputError("give exactly one of: a query text, a file of queries, a .npy of vectors")
    if vectors is not None:
        for i, hits in enumerate(index.search(load_query_vectors(vectors), top_k=top_k, **params)):
            yield {"query": i, "results": hits}
        return
    if queries is not None:
        recs = list(read_corpus(Path(queries), format, text_field))
        texts, qids = [r.text for r in recs], [r.id for r in recs]
    else:
        texts, qids = [text], [None]
    own = index.pipeline_
    if model is not None:
        from ..pipeline import Pipeline

        pipe = own.replace(model=model) if own is not None else Pipeline(model)
    else:
        pipe = index.query_pipeline()
    if num_threads is not None:
        pipe.num_threads = num_threads
    pipe = index.query_pipeline(pipe)
    hits = index.search_text(texts, top_k=top_k, pipeline=pipe, batch_size=batch_size, **params)
    for qid, qt, h in zip(qids, texts, hits, strict=True):
        yield {"query": qt, **({"query_id": qid} if qid is not None else {}), "results": h}
