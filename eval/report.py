"""Reports of a grid run: MTEB-shaped JSON per task, a run manifest, a markdown table, a plot.

>>> write_report(run, "results/", argv=sys.argv)     # doctest: +SKIP
>>> print(markdown_table(run))                       # rows model-pooling, columns the tasks

Layout of ``OUT/``::

    manifest.json                                versions, models, data sha256, protocol, seed
    cells.jsonl                                  one line per (model, pooling, transform, task, split)
    table.md                                     the markdown table(s), one per split
    whitening_dim.png                            score vs whitening dimension (matplotlib extra)
    <model>/<pooling>/<transform>/<TASK>.json    MTEB-style result of one task

Scores in JSON are correlations in [-1, 1], as MTEB writes them; the table shows them × 100
with two decimals, as the BERT-whitening and RoFormer-Sim articles do.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import platform
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simkit.fsutil import atomic_dir, write_json

from .grid import Cell, GridRun
from .scoring import averages

logger = logging.getLogger("simkit_eval")

MANIFEST_FORMAT = "simkit-eval-run"
MANIFEST_VERSION = 1
LANGUAGES = ["cmn-Hans"]


def slug(name: str) -> str:
    """A file-system-safe name for a model path or id."""
    tail = "/".join(Path(name.rstrip("/")).parts[-2:]) if "/" in name else name
    return re.sub(r"[^0-9A-Za-z._-]+", "__", tail).strip("_") or "model"


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for mod in ("simkit", "torch", "transformers", "numpy", "scipy", "sklearn", "tokenizers"):
        m = sys.modules.get(mod)
        if m is None and mod in ("simkit", "numpy", "scipy", "sklearn"):
            m = __import__(mod)
        out[mod] = getattr(m, "__version__", None) if m is not None else None
    return out


def task_result(run: GridRun, model: str, pooling: str, transform: str, task: str) -> dict:
    """One task's result in the shape MTEB writes (``scores`` keyed by split)."""
    cells = [c for c in run.cells if (c.model, c.pooling, c.transform, c.task) == (model, pooling, transform, task)]
    info = run.tasks[task]
    scores = {
        c.split: [{"hf_subset": "default", "languages": LANGUAGES, **c.scores, "n_pairs": c.n_pairs}]
        for c in cells
    }
    enc = info["models"].get(model, {})
    return {
        "task_name": task,
        "dataset_revision": {s: d["sha256"] for s, d in info["splits"].items()},
        "mteb_version": None,
        "scores": scores,
        "evaluation_time": round(sum(c.evaluation_time for c in cells) + enc.get("encode_time", 0.0), 4),
        "kg_co2_emissions": None,
        "model": model,
        "pooling": pooling,
        "transform": transform,
        "n_components": cells[0].n_components if cells else None,
        "max_seq_length": info["max_seq_length"],
        "fit": info["fit"] if transform != "none" or pooling == "-" else None,
        "encode": enc or None,
    }


def manifest(run: GridRun, argv: Sequence[str] | None = None) -> dict:
    from simkit import __version__

    cfg = run.config
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "simkit_version": __version__,
        "versions": versions(),
        "argv": list(argv) if argv is not None else None,
        "models": run.models,
        "tasks": list(cfg.tasks),
        "splits": list(cfg.splits),
        "poolings": list(cfg.poolings),
        "transforms": [t.name for t in cfg.transforms],
        "fit_on": cfg.fit_on,
        "seed": cfg.seed,
        "bootstrap": cfg.bootstrap,
        "limit": cfg.limit,
        "max_seq_length": {t: run.tasks[t]["max_seq_length"] for t in cfg.tasks},
        "data": run.tasks,
        "cache": run.cache,
        "notes": run.notes,
        "elapsed": run.elapsed,
        "summary": summary(run),
    }


def _rows(run: GridRun) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for c in run.cells:
        seen.setdefault((c.model, c.pooling), None)
    return list(seen)


def summary(run: GridRun) -> list[dict]:
    """Per (model, pooling, transform, split): the average and pair-weighted average over tasks."""
    groups: dict[tuple, list[Cell]] = collections.defaultdict(list)
    for c in run.cells:
        groups[(c.model, c.pooling, c.transform, c.split)].append(c)
    out = []
    for (m, p, t, s), cells in groups.items():
        scores = [c.scores["main_score"] for c in cells]
        row = {"model": m, "pooling": p, "transform": t, "split": s, "tasks": [c.task for c in cells],
               **averages(scores, [c.n_pairs for c in cells])}
        reps = [run.replicates.get((m, p, t, c.task, s)) for c in cells]
        if reps and all(r is not None for r in reps):
            # The tasks are resampled independently, so the mean of their i-th replicates is a
            # bootstrap replicate of the average.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                low, high = np.nanpercentile(np.mean(reps, axis=0), [2.5, 97.5])
            row.update(avg_ci_low=float(low), avg_ci_high=float(high))
        out.append(row)
    return out


def _fmt(x: float | None) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.2f}"


def markdown_table(run: GridRun, split: str | None = None) -> str:
    """Rows model-pooling, columns the tasks (+ avg, weighted avg); cells ``none / whitening / …``."""
    splits = [split] if split else list(dict.fromkeys(c.split for c in run.cells))
    tasks = [t for t in run.config.tasks if any(c.task == t for c in run.cells)]
    present = {c.transform for c in run.cells}
    transforms = [n for n in dict.fromkeys(["none", *(t.name for t in run.config.transforms)]) if n in present]
    if "none" not in (t.name for t in run.config.transforms) and any(c.pooling != "-" for c in run.cells):
        transforms = transforms[1:] if transforms[:1] == ["none"] else transforms
    avg = {(d["model"], d["pooling"], d["transform"], d["split"]): d for d in summary(run)}
    by = {(c.model, c.pooling, c.transform, c.task, c.split): c.scores["main_score"] for c in run.cells}
    with_ci = any("avg_ci_low" in d for d in avg.values())
    blocks = []
    for s in splits:
        head = ["model-pooling", *tasks, "avg", "w-avg", *(["avg 95 % CI"] if with_ci else [])]
        title = (f"Spearman × 100 on the {s} split; cells: {' / '.join(transforms)}"
                 f" (whitening / IDF fit on: {run.config.fit_on})")
        lines = [title, "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m, p in _rows(run):
            label = m if p == "-" else f"{m}-{p}"
            cols = []
            for t in tasks:
                cols.append(" / ".join(_fmt(by.get((m, p, tr, t, s))) for tr in transforms))
            for key in ("avg", "weighted_avg"):
                vals = []
                for tr in transforms:
                    d = avg.get((m, p, tr, s))
                    vals.append(_fmt(d[key]) if d and len(d["tasks"]) == len(tasks) else "–")
                cols.append(" / ".join(vals))
            if with_ci:
                ci = []
                for tr in transforms:
                    d = avg.get((m, p, tr, s))
                    ok = d and "avg_ci_low" in d and len(d["tasks"]) == len(tasks)
                    ci.append(f"{_fmt(d['avg_ci_low'])}–{_fmt(d['avg_ci_high'])}" if ok else "–")
                cols.append(" / ".join(ci))
            lines.append("| " + " | ".join([label, *cols]) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("the plot needs matplotlib: pip install 'simkit[plot]' (or pip install matplotlib)") from None
    return plt


def plot_whitening_dims(run: GridRun, path: str | Path, split: str | None = None) -> bool:
    """PNG of Spearman vs whitening dimension, one panel per task, one line per model-pooling.

    Returns False (draws nothing) when the run has fewer than two whitening dimensions.
    """
    split = split or run.config.splits[0]
    pts: dict[tuple[str, str, str], dict[int, float]] = collections.defaultdict(dict)
    for c in run.cells:
        if c.split == split and c.transform.startswith("whitening"):
            dim = c.n_components or int(run.models[c.model].get("dim") or 0)
            pts[(c.task, c.model, c.pooling)][dim] = 100 * c.scores["main_score"]
    if not pts or max(len(v) for v in pts.values()) < 2:
        return False
    plt = _require_matplotlib()
    tasks = [t for t in run.config.tasks if any(k[0] == t for k in pts)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        for (t, m, p), series in sorted(pts.items()):
            if t == task:
                xs = sorted(series)
                ax.plot(xs, [series[x] for x in xs], marker="o", label=f"{m}-{p}")
        ax.set_xscale("log", base=2)
        ax.set_title(task)
        ax.set_xlabel("whitening dimension")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"Spearman × 100 ({split})")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_report(run: GridRun, out: str | Path, argv: Sequence[str] | None = None,
                 overwrite: bool = False, plot: bool | None = None) -> Path:
    """Write ``OUT/`` atomically (see module doc). ``plot=None``: plot if matplotlib is there."""
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite, kind=MANIFEST_FORMAT, versioned=False) as tmp:
        write_json(tmp / "manifest.json", manifest(run, argv))
        with open(tmp / "cells.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(dataclasses.asdict(c), ensure_ascii=False) + "\n" for c in run.cells)
        (tmp / "table.md").write_text(markdown_table(run), encoding="utf-8")
        keys = dict.fromkeys((c.model, c.pooling, c.transform, c.task) for c in run.cells)
        slugs: dict[str, str] = {}
        for m in dict.fromkeys(k[0] for k in keys):  # two models with one slug get -2, -3 ...
            base = slug(m)
            slugs[m] = base if base not in slugs.values() else f"{base}-{len(slugs) + 1}"
        for m, p, t, task in keys:
            folder = tmp / slugs[m] / (p if p != "-" else "default") / t
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / f"{task}.json", task_result(run, m, p, t, task))
        if plot is not False:
            try:
                plot_whitening_dims(run, tmp / "whitening_dim.png")
            except ImportError as e:
                if plot:
                    raise
                logger.info("no plot: %s", e)
    return out
