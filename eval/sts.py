"""``simkit eval sts`` as one library call: load the models, run the grid, write the report.

>>> run = run_sts(["my-model"], "data/chinese-sts", "results/m", GridConfig(...))  # doctest: +SKIP
>>> print(markdown_table(run))
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from simkit.errors import InputError

from .baseline import NAME as TFIDF
from .cache import EmbeddingCache
from .grid import GridConfig, GridRun, ModelSpec, run_grid
from .report import write_report

log = logging.getLogger(__name__)
MAX_NOTES_SHOWN = 5


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/simkit/eval``, else ``~/.cache/simkit/eval``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "simkit" / "eval"


def model_specs(names: Sequence[str], baseline: str | None = None, dtype: str = "fp32",
                num_threads: int | None = None) -> list[ModelSpec]:
    """One :class:`ModelSpec` per distinct name (default: ``$SIMKIT_MODEL`` / the bundled model);
    ``tfidf`` is the weight-free baseline, added last when ``baseline`` names it."""
    from simkit.encoder import Encoder, default_model_path

    names = list(names) or [default_model_path()]
    if baseline is not None:
        if baseline != TFIDF:
            raise InputError(f"unknown baseline {baseline!r}; expected one of: {TFIDF}")
        names.append(TFIDF)
    specs = []
    for name in dict.fromkeys(names):
        if name == TFIDF:
            specs.append(ModelSpec(TFIDF))
            continue
        t0 = time.perf_counter()
        specs.append(ModelSpec(name, Encoder(name, dtype=dtype, num_threads=num_threads)))
        log.info("loaded %s in %.1fs", name, time.perf_counter() - t0)
    return specs


def run_sts(specs: Sequence[ModelSpec], data_dir: str | os.PathLike, output: str | os.PathLike,
            config: GridConfig, cache_dir: str | os.PathLike | None = None, no_cache: bool = False,
            plot: bool | None = None, overwrite: bool = False, argv: Sequence[str] | None = None) -> GridRun:
    """Score every spec on the grid of ``config``; write the report directory ``output``."""
    cache = EmbeddingCache(None if no_cache else (cache_dir or default_cache_dir()))
    run = run_grid(list(specs), data_dir, config, cache)
    write_report(run, output, argv=argv, overwrite=overwrite, plot=plot)
    # Every note is in the manifest; stderr gets the first few, so a grid of many models and
    # tasks does not bury the table under one line per cell.
    for note in run.notes[:MAX_NOTES_SHOWN]:
        log.warning("note: %s", note)
    if len(run.notes) > MAX_NOTES_SHOWN:
        log.warning("note: %d more notes in %s", len(run.notes) - MAX_NOTES_SHOWN, Path(output) / "manifest.json")
    log.info("wrote %s (%d scores, %.1fs; encoded %d sentences in %d passes, %d cache hits)",
             output, len(run.cells), run.elapsed, run.cache["encoded"], run.cache["passes"], run.cache["hits"])
    return run
