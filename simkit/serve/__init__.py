"""``simkit serve``: a search service over simkit indexes (the optional extra ``simkit[serve]``:
FastAPI + uvicorn). Nothing in the core imports this package.

>>> from simkit.serve import Limits, Registry, create_app           # doctest: +SKIP
>>> app = create_app(Registry({"faq": "faq-index/"}), Limits(max_texts=32))
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as e:  # one line for the CLI to print
    raise ImportError(f"simkit serve needs the 'serve' extra ({e.name} is missing): "
                      "pip install 'simkit[serve]'") from None

from .app import Limits, create_app, listen, run
from .batcher import MicroBatcher, OneThread
from .registry import Registry, artifact_token

__all__ = ["Limits", "MicroBatcher", "OneThread", "Registry", "artifact_token", "create_app", "listen", "run"]
