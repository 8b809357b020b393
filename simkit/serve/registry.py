"""The indexes a server answers from, each swapped for its new version when one appears.

A :class:`Served` index holds a reference to its current :class:`Loaded` state (index, query
pipeline, batcher, version token). A request reads that reference once and uses it to the
end, so a reload never changes an index under a request. :meth:`Registry.refresh` polls each
index's version token; on a change it loads the new version whole in a thread and then swaps
the reference (one assignment). A load that fails leaves the old version serving, and says so
in the log. Encoders are shared: a new version made with the same model reuses the loaded
weights and the same batcher.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import fsutil
from ..errors import FormatError, InputError
from .batcher import MAX_TOKENS_PER_BATCH, MicroBatcher, OneThread

log = logging.getLogger("simkit.serve")


def artifact_token(path: str | os.PathLike) -> str | None:
    """A cheap token that changes when a new version of the artifact at ``path`` is switched
    in (:func:`simkit.fsutil.artifact_version`); ``None`` while there is none to read."""
    try:
        return fsutil.artifact_version(path)
    except (OSError, FormatError):
        return None


@dataclass
class Loaded:
    """One version of one index, as the server uses it."""

    index: Any
    pipeline: Any  # the query pipeline (None: the index takes vectors only)
    batcher: MicroBatcher | None
    shared: _Shared | None
    version: str | None
    loaded_at: float = field(default_factory=time.time)


@dataclass
class _Shared:
    """What all indexes made with one model share: its encoder, batcher and paraphraser."""

    encoder: Any
    batcher: MicroBatcher
    paraphraser: Any = None


class Served:
    """A named index and the version of it being served."""

    def __init__(self, name: str, path: Path, current: Loaded):
        self.name = name
        self.path = path
        self.current = current  # replaced whole by a reload, never changed in place
        self.failed_version: str | None = None
        self.reloads = 0


class Registry:
    """Named indexes, the encoders they share, and their hot reload."""

    def __init__(self, paths: dict[str, str | os.PathLike], *, max_batch: int = 64,
                 window_ms: float = 2.0, threads: int | None = None, warmup: bool = True,
                 backend: str | None = None, dtype: str | None = None,
                 max_tokens_per_batch: int = MAX_TOKENS_PER_BATCH):
        self.max_batch, self.window_ms, self.threads, self.warmup = max_batch, window_ms, threads, warmup
        self.max_tokens_per_batch = max_tokens_per_batch
        # Runtime of the model (None: as each index's pipeline loads); the weights are the same.
        self.backend, self.dtype = backend, dtype
        self.model_thread = OneThread("simkit-model")
        self._shared: dict[tuple, _Shared] = {}
        self._lock = threading.Lock()
        self.indexes: dict[str, Served] = {}
        for name, path in paths.items():
            path = Path(path)
            token = artifact_token(path)
            self.indexes[name] = Served(name, path, self._load(path, token))

    # -- loading ------------------------------------------------------------------------
    def _load(self, path: Path, token: str | None) -> Loaded:
        from ..index import load_index

        index = load_index(path)
        own = index.pipeline_
        if own is None or not own.has_model:
            return Loaded(index, None, None, None, token)
        shared = self._shared_for(own)
        pipeline = index.query_pipeline(encoder=shared.encoder)  # checks the weights fingerprint
        return Loaded(index, pipeline, shared.batcher, shared, token)

    def _shared_for(self, pipeline) -> _Shared:
        if self.backend is not None:
            pipeline.backend = self.backend
        if self.dtype is not None:
            pipeline.dtype = self.dtype
        key = (str(pipeline.model), pipeline.fingerprint, pipeline.pooling, pipeline.max_seq_length,
               pipeline.dtype, pipeline.backend)
        with self._lock:
            shared = self._shared.get(key)
        if shared is not None:
            return shared
        if self.threads is not None:
            pipeline.num_threads = self.threads
        encoder = self.model_thread.call(self._load_encoder, pipeline)
        batcher = MicroBatcher(encoder, self.model_thread, self.max_batch, self.window_ms,
                               batch_size=max(32, self.max_batch), max_tokens_per_batch=self.max_tokens_per_batch)
        with self._lock:
            return self._shared.setdefault(key, _Shared(encoder, batcher))

    def _load_encoder(self, pipeline):
        """On the model thread: the weights (refusing others than those recorded), warmed up
        so that the first request does not pay for lazy initialisation."""
        encoder = pipeline.encoder
        if self.warmup:
            encoder.encode(["预热"], show_progress_bar=False)
        return encoder

    def get(self, name: str | None) -> Served:
        """The index called ``name``; ``None`` when exactly one is served."""
        if name is None:
            if len(self.indexes) == 1:
                return next(iter(self.indexes.values()))
            raise InputError(f"several indexes are served ({', '.join(self.indexes)}); name one with \"index\"")
        try:
            return self.indexes[name]
        except KeyError:
            raise InputError(f"no index named {name!r}; served: {', '.join(self.indexes)}") from None

    def batch_stats(self) -> list[dict]:
        """Per model: batches run, texts encoded, the largest batch (dynamic batching at work)."""
        with self._lock:
            shared = list(self._shared.values())
        return [{"model": s.encoder.fingerprint, "batches": s.batcher.batches,  # no path: /health is open
                 "texts": s.batcher.texts, "max_batch_seen": s.batcher.max_seen} for s in shared]

    # -- hot reload ---------------------------------------------------------------------
    def refresh(self, served: Served, attempts: int = 3) -> bool:
        """Load and swap in a new version of ``served`` if there is one (blocking; run it in a
        thread). Returns whether a new version was swapped in."""
        for _ in range(attempts):
            token = artifact_token(served.path)
            if token is None or token == served.current.version or token == served.failed_version:
                return False
            try:
                loaded = self._load(served.path, token)
            except Exception as e:
                if artifact_token(served.path) != token:
                    continue  # a writer switched versions while we read: read the newer one
                served.failed_version = token  # broken as written; wait for the next version
                log.warning("simkit serve: could not load the new version of index %r (%s); "
                            "still serving version %s", served.name, e, served.current.version)
                return False
            if artifact_token(served.path) != token:
                continue  # switched while we read: the files may come from two versions
            served.current = loaded
            served.failed_version = None
            served.reloads += 1
            log.info("simkit serve: index %r now serves version %s (%d documents)",
                     served.name, token, len(loaded.index))
            return True
        return False

    async def aclose(self) -> None:
        for shared in list(self._shared.values()):
            await shared.batcher.aclose()
        self.model_thread.close()
