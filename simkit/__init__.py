"""simkit: Chinese sentence embeddings and semantic search.

>>> from simkit import Encoder
>>> Encoder().encode(["花呗怎么还款"]).shape       # (1, 384) with the bundled model
"""

from __future__ import annotations

__version__ = "0.1.0"

# Lazy: `import simkit` (and the CLI's --help) must not pay for importing torch.
_EXPORTS = {
    "Encoder": "simkit.encoder",
    "Pipeline": "simkit.pipeline",
    "Paraphraser": "simkit.generate",
    "VectorIndex": "simkit.index",
    "LSHIndex": "simkit.index",
    "load_index": "simkit.index",
    "Whitening": "simkit.transforms",
    "RandomProjection": "simkit.transforms",
    "Normalize": "simkit.transforms",
    "Chain": "simkit.transforms",
    "load_transform": "simkit.transforms",
    "load_model": "simkit.models.checkpoint",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'simkit' has no attribute {name!r}")
