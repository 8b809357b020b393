"""simkit models in mteb 2.x: an encoder wrapper with its ModelMeta, and a runner.

>>> from simkit.encoder import Encoder
>>> model = SimkitMtebModel(Encoder("my-model"), "local/my-model")         # doctest: +SKIP
>>> run_mteb(model, resolve_tasks(["ATEC", "BQ"]), "results/my-model")     # doctest: +SKIP

The wrapper takes any object with ``encode(texts, batch_size=..., show_progress_bar=...)
-> np.ndarray`` (simkit's ``Encoder`` today, the pipeline later), scores by cosine and writes
mteb's own result layout (``OUT/results/<name>/<revision>/<task>.json`` plus
``model_meta.json``). Needs the ``mteb`` extra: ``pip install 'simkit[mteb]'``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from simkit.errors import InputError

try:
    import mteb
except ModuleNotFoundError:  # the CLI turns this into one line and exit 1
    raise ImportError("simkit eval mteb needs mteb: pip install 'simkit[mteb]'") from None
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction

logger = logging.getLogger(__name__)

NO_REVISION = "no_revision_available"  # mteb's own placeholder


class TextEncoder(Protocol):
    """What the wrapper needs of a model: texts in, (n, d) float vectors out."""

    def encode(self, sentences: Sequence[str], batch_size: int = 32,
               show_progress_bar: bool | None = None) -> np.ndarray: ...


class SimkitMtebModel(AbsEncoder):
    """An mteb encoder (``EncoderProtocol``) over a simkit encoder; cosine similarity.

    ``name`` must look like ``org/model`` (mteb's rule); ``revision`` names the weights (the
    CLI passes a hash of them). Within one task split, each distinct text is encoded once and
    gets one vector: mteb encodes the two sides of an STS task in separate calls, and a
    sentence found on both sides must get the same vector, or its self-similarity (exactly
    1.0, distance exactly 0) would be spread by batch-dependent float noise.

    >>> m = SimkitMtebModel(Encoder(path), "local/tiny", revision="abc123")   # doctest: +SKIP
    >>> m.mteb_model_meta.similarity_fn_name                                    # COSINE
    """

    def __init__(self, model: TextEncoder, name: str, *, revision: str | None = None,
                 languages: Sequence[str] | None = ("cmn-Hans",), reference: str | None = None):
        if "/" not in name:
            raise InputError(f"mteb model name {name!r} must look like 'org/model'")
        self.model = model
        dim = getattr(model, "get_sentence_embedding_dimension", None)
        self.mteb_model_meta = ModelMeta(
            loader=load_simkit_model, name=name, revision=revision or NO_REVISION,
            release_date=None, languages=list(languages) if languages else None,
            n_parameters=_n_parameters(model), memory_usage_mb=None,
            max_tokens=getattr(model, "max_seq_length", None), embed_dim=dim() if dim else None,
            license=None, open_weights=True, public_training_code=None,
            public_training_data=None, framework=["PyTorch", "safetensors"], reference=reference,
            similarity_fn_name=ScoringFunction.COSINE, use_instructions=False,
            training_datasets=None,
        )
        self._memo_key: tuple | None = None
        self._memo: dict[str, np.ndarray] = {}

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str,
               prompt_type=None, **kwargs: Any) -> np.ndarray:
        texts = [t for batch in inputs for t in batch["text"]]
        key = (task_metadata.name, hf_subset, hf_split)
        if key != self._memo_key:  # one split's texts at a time: memory stays one split's
            self._memo_key, self._memo = key, {}
        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if new:
            vecs = np.asarray(self.model.encode(new, batch_size=int(kwargs.get("batch_size", 32)),
                                                show_progress_bar=kwargs.get("show_progress_bar")),
                              dtype=np.float32)
            self._memo.update(zip(new, vecs))
        if not texts:
            return np.empty((0, self.mteb_model_meta.embed_dim or 0), dtype=np.float32)
        return np.stack([self._memo[t] for t in texts])


def _n_parameters(model) -> int | None:
    net = getattr(model, "model", None)
    return sum(p.numel() for p in net.parameters()) if hasattr(net, "parameters") else None


def load_simkit_model(model_name: str, revision: str | None = None, **kwargs: Any) -> SimkitMtebModel:
    """mteb's loader hook (``ModelMeta.load_model``): a simkit model dir or hub id, wrapped."""
    from simkit.encoder import Encoder

    return SimkitMtebModel(Encoder(model_name, **kwargs), mteb_name(model_name), revision=revision)


def mteb_name(model: str | os.PathLike) -> str:
    """An ``org/model`` name for mteb: a hub id as it is, a local dir as ``local/<dir name>``.

    >>> mteb_name("/data/models/simbert-tiny")   # 'local/simbert-tiny' (if that dir exists)
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return f"local/{path.resolve().name}"
    return str(model)


def resolve_tasks(tasks: Sequence[str] = (), benchmark: str | None = None) -> list:
    """mteb task objects for task names and / or a benchmark (e.g. ``"MTEB(cmn, v1)"``)."""
    found = []
    if benchmark:
        try:
            found.extend(mteb.get_benchmark(benchmark).tasks)
        except (KeyError, ValueError) as e:
            raise InputError(f"unknown mteb benchmark {benchmark!r} ({e})") from None
    if tasks:
        try:
            found.extend(mteb.get_tasks(tasks=list(tasks)))
        except (KeyError, ValueError) as e:
            raise InputError(f"unknown mteb task in {list(tasks)} ({e})") from None
    if not found:
        raise InputError("no mteb task given; pass --tasks T1,T2 and/or --benchmark 'MTEB(cmn, v1)'")
    return list({t.metadata.name: t for t in found}.values())


def run_mteb(model: SimkitMtebModel, tasks: Sequence, output: str | os.PathLike, *,
             batch_size: int = 32, resume: bool = False, show_progress_bar: bool = False) -> dict:
    """Run mteb on ``tasks``; mteb writes its result files under ``output``.

    Returns ``{"results": {task: main_score}, "failed": {task: error}, "dir": <result dir>}``.
    A failing task does not stop the others (C-MTEB has 31 tasks). ``resume`` keeps the
    results already in ``output`` and runs only what is missing there.
    """
    cache = mteb.ResultCache(cache_path=Path(output))
    res = mteb.evaluate(
        model, list(tasks), cache=cache, raise_error=False,
        overwrite_strategy="only-missing" if resume else "always",
        encode_kwargs={"batch_size": batch_size, "show_progress_bar": show_progress_bar},
        show_progress_bar=show_progress_bar,
    )
    meta = model.mteb_model_meta
    scores = {r.task_name: float(r.get_score()) for r in res.task_results}
    failed = {e.task_name: e.exception for e in res.exceptions or []}
    where = Path(output) / "results" / meta.model_name_as_path() / meta.revision
    return {"results": scores, "failed": failed, "dir": str(where)}
