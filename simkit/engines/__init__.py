"""Encoding engines: a corpus (many files) -> a sharded embedding store, resumably.

- ``local``: this process, shard after shard (:mod:`simkit.engines.local`);
- ``ray``: a Ray Data actor pool, one pipeline per worker (:mod:`simkit.engines.ray_engine`,
  the optional extra ``simkit[ray]``; nothing here imports ray until that engine runs).

Both cut the inputs into the same shards and stage them the same way
(:mod:`simkit.engines.shards`), so a job started by one engine can be finished by the other,
and both give the same store.

>>> encode_sharded(["a.txt", "b/*.jsonl"], "emb/", Pipeline("my-model"), engine="ray",
...                num_workers=4)                                            # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import InputError, check_choice
from ..pipeline import Pipeline

ENGINES = ("local", "ray")

RAY_HINT = "the ray engine needs Ray: pip install 'simkit[ray]' (Ray Data 2.x beside the pinned torch)"


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def encode_sharded(inputs, output: str | os.PathLike, pipeline: Pipeline | None = None, *,
                   engine: str = "local", format: str = "auto", text_field: str | None = None,
                   id_field: str | None = None, batch_size: int = 32, shard_size: int = 10000,
                   overwrite: bool = False, show_progress_bar: bool | None = None,
                   address: str | None = None, num_workers: int | None = None,
                   num_cpus_per_worker: float = 1, num_gpus_per_worker: float = 0) -> dict:
    """Encode ``inputs`` (files, directories, globs) into a sharded store at ``output``.

    Returns a JSON-able summary. Re-running a job that was killed skips its complete shards
    (see :mod:`simkit.engines.shards`). ``address`` / ``num_workers`` /
    ``num_cpus_per_worker`` / ``num_gpus_per_worker`` apply to the ray engine.
    """
    from . import shards

    check_choice("engine", engine, ENGINES)
    if engine == "ray" and not ray_available():
        raise InputError(RAY_HINT)
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size}; expected a positive integer")
    output = Path(output)
    if output.exists() and not overwrite:
        raise InputError(f"{output} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    pipeline = pipeline if pipeline is not None else Pipeline()
    t0 = time.perf_counter()
    job = shards.plan_job(inputs, output, pipeline, format=format, text_field=text_field,
                          id_field=id_field, shard_size=shard_size)
    todo = shards.open_stage(job)
    skipped = len(job.tasks) - len(todo)
    if engine == "local":
        from . import local

        info = local.run(job, todo, batch_size=batch_size, show_progress_bar=show_progress_bar)
    else:
        from . import ray_engine

        info = ray_engine.run(job, todo, batch_size=batch_size, address=address, num_workers=num_workers,
                              num_cpus_per_worker=num_cpus_per_worker, num_gpus_per_worker=num_gpus_per_worker,
                              show_progress_bar=show_progress_bar)
    return shards.finish(job, overwrite=overwrite, engine=engine, seconds=time.perf_counter() - t0,
                         extra={**info, "shards_resumed": skipped})


def encode_inputs(inputs, output: str | os.PathLike, pipeline: Pipeline | None = None, *,
                  engine: str = "local", shard_size: int | None = None, chunk_size: int = 10000,
                  **options) -> dict:
    """Encode corpus files into a store: one file on the local engine without ``shard_size``
    gives a single-file store (:func:`simkit.embed.encode_corpus`); anything else (several
    inputs, a directory or glob, parquet, ``shard_size``, the ray engine) a sharded one
    (:func:`encode_sharded`). ``options`` go to whichever runs."""
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    one = Path(inputs[0]) if len(inputs) == 1 else None
    if (engine == "local" and shard_size is None and one is not None and one.is_file()
            and options.get("format", "auto") != "parquet" and one.suffix.lower() != ".parquet"):
        from ..embed import encode_corpus

        local = {k: v for k, v in options.items() if k in ("format", "text_field", "id_field", "batch_size",
                                                          "overwrite", "show_progress_bar")}
        return encode_corpus(one, output, pipeline, chunk_size=chunk_size, **local)
    return encode_sharded(inputs, output, pipeline, engine=engine, shard_size=shard_size or 10000, **options)
