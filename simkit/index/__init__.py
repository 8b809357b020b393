"""Vector indexes: FAISS (VectorIndex) and sign-random-projection LSH (LSHIndex).

An index directory holds ``config.json`` (format ``simkit-index``), ``store.sqlite`` (ids,
texts, metadata), the vectors (``index.faiss``, or the LSH ``*.npy`` arrays), and, when the
index has one, its transform chain in ``transform/``.

>>> from simkit.index import VectorIndex, load_index
>>> idx = VectorIndex(preset="ivf").add(X, ids, texts)   # X: (n, d) float32
>>> idx.save("idx/"); load_index("idx/").search_text("花呗怎么还款", top_k=5)
"""

from __future__ import annotations

from .base import FORMAT, FORMAT_VERSION, BaseIndex, load_index, read_index_config
from .build import add_input, build_index, describe_index, read_vectors
from .lsh import LSHIndex
from .query import search_inputs
from .store import DocStore
from .vector import VectorIndex

__all__ = ["FORMAT", "FORMAT_VERSION", "BaseIndex", "DocStore", "LSHIndex", "VectorIndex", "add_input",
           "build_index", "describe_index", "load_index", "read_index_config", "read_vectors", "search_inputs"]
