"""The evaluation grid: models × pooling × transform, on each task and split.

>>> cfg = GridConfig(tasks=["STS-B"], splits=["valid"], poolings=["cls", "first-last-avg"],
...                  transforms=parse_transforms("0,full,256", jl=[128]))
>>> run = run_grid([ModelSpec("m", Encoder("m/")), ModelSpec("tfidf")], "data/", cfg)  # doctest: +SKIP
>>> run.cells[0].scores["main_score"]                                                 # Spearman

Per task, every distinct sentence of the loaded splits (and of the whitening fit set) is
encoded once for all poolings (:class:`~simkit_eval.cache.EmbeddingCache`), then each
transform is fitted on the fit set and applied to those vectors; nothing is re-encoded.

Whitening follows BERT-whitening (chn/eval.py): the kernel is fitted on the vectors of
``sentence1`` and ``sentence2`` of every pair (duplicates kept) of the fit set —
``fit_on='all'``: all the task's loaded splits; a split name; or an external corpus file —
and ``whitening-k`` keeps the first k columns of the full kernel, exactly as the published
code slices ``kernel[:, :k]``. Vectors are then L2-normalised and compared by cosine.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from simkit.errors import InputError, ParameterError, check_choice
from simkit.transforms import RandomProjection, Whitening

from .baseline import NAME as BASELINE_NAME
from .baseline import TfidfEncoder
from .cache import EmbeddingCache
from .data import (
    DEFAULT_MAX_SEQ_LENGTH,
    SPLITS,
    TASKS,
    PairDataset,
    load_task,
    read_pairs_tsv,
    sha256_file,
    unique_texts,
)
from .scoring import bootstrap_spearman, cosine_pairs, similarity_scores, sts_scores

logger = logging.getLogger("simkit_eval")

GRID_POOLINGS: tuple[str, ...] = ("cls", "pooler", "last-avg", "first-last-avg")
TransformKind = Literal["none", "whitening", "jl"]


@dataclasses.dataclass(frozen=True)
class TransformSpec:
    """``none``, ``whitening`` (n_components None = full), ``whitening-k`` or ``jl-k``."""

    kind: TransformKind
    n_components: int | None = None

    @property
    def name(self) -> str:
        return self.kind if self.n_components is None else f"{self.kind}-{self.n_components}"


def _positive_int(text: str, what: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise InputError(f"{what}: {text!r} is not an integer") from None
    if k < 1:
        raise InputError(f"{what}: {k} must be a positive integer")
    return k


def parse_transforms(whitening: str | Sequence[str] = "0,full", jl: Sequence[int | str] = ()) -> list[TransformSpec]:
    """``"0,full,256"`` -> none, whitening, whitening-256; ``jl=[128]`` adds jl-128.

    >>> [t.name for t in parse_transforms("0,full,256", jl=[128])]
    ['none', 'whitening', 'whitening-256', 'jl-128']
    """
    items = whitening.split(",") if isinstance(whitening, str) else list(whitening)
    out: list[TransformSpec] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if item in ("0", "none"):
            spec = TransformSpec("none")
        elif item == "full":
            spec = TransformSpec("whitening")
        else:
            spec = TransformSpec("whitening", _positive_int(item, "--whitening (0, full or k)"))
        if spec not in out:
            out.append(spec)
    for k in jl:
        spec = TransformSpec("jl", _positive_int(str(k), "--jl"))
        if spec not in out:
            out.append(spec)
    if not out:
        raise InputError("no transform selected; e.g. --whitening 0,full")
    return out


def parse_max_seq_length(spec: str | int | None) -> dict[str, int]:
    """``None`` -> the reference's (64, PAWSX 128); ``"96"`` -> 96 everywhere;
    ``"PAWSX=256,BQ=48"`` -> the defaults with those overrides."""
    out = dict(DEFAULT_MAX_SEQ_LENGTH)
    if spec is None or spec == "":
        return out
    text = str(spec)
    if "=" not in text:
        n = _positive_int(text, "--max-seq-length")
        return {t: n for t in out}
    for part in text.split(","):
        task, _, n = part.partition("=")
        check_choice("task", task.strip(), TASKS)
        out[task.strip()] = _positive_int(n.strip(), f"--max-seq-length {task}")
    return out


@dataclasses.dataclass
class ModelSpec:
    """A model of the grid: an :class:`~simkit.encoder.Encoder`, or ``encoder=None`` for TF-IDF."""

    name: str
    encoder: Any = None

    @property
    def is_baseline(self) -> bool:
        return self.encoder is None


@dataclasses.dataclass
class GridConfig:
    tasks: Sequence[str] = TASKS
    splits: Sequence[str] = ("valid",)
    poolings: Sequence[str] = GRID_POOLINGS
    transforms: Sequence[TransformSpec] = (TransformSpec("none"), TransformSpec("whitening"))
    fit_on: str = "all"
    max_seq_length: dict[str, int] = dataclasses.field(default_factory=lambda: dict(DEFAULT_MAX_SEQ_LENGTH))
    batch_size: int = 32
    seed: int = 0
    limit: int | None = None
    data_format: str = "auto"
    show_progress_bar: bool | None = None
    bootstrap: int = 0  # resamples for 95 % intervals of main_score and of the averages; 0: none


@dataclasses.dataclass
class Cell:
    """One score: a (model, pooling, transform) on a (task, split)."""

    model: str
    pooling: str
    transform: str
    task: str
    split: str
    scores: dict[str, float]
    n_pairs: int
    evaluation_time: float
    n_components: int | None = None


@dataclasses.dataclass
class GridRun:
    cells: list[Cell]
    config: GridConfig
    tasks: dict[str, dict]
    models: dict[str, dict]
    notes: list[str]
    cache: dict[str, int]
    elapsed: float
    # (model, pooling, transform, task, split) -> bootstrap Spearman replicates (config.bootstrap > 0)
    replicates: dict[tuple, np.ndarray] = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------------- fit sets
def _fit_set(task: str, data: dict[str, PairDataset], cfg: GridConfig, data_dir) -> tuple[list[str], dict]:
    """The sentences the whitening / TF-IDF is fitted on, and a record of the protocol."""
    fit_on = cfg.fit_on
    if fit_on == "all":
        texts = [t for s in cfg.splits for t in (*data[s].sentences1, *data[s].sentences2)]
        return texts, {"fit_on": "all", "splits": list(cfg.splits), "n_vectors": len(texts),
                       "protocol": "sentence1 and sentence2 of every pair of the evaluated splits, "
                                   "duplicates kept (BERT-whitening chn/eval.py)"}
    if fit_on in SPLITS or fit_on in cfg.splits:
        ds = data.get(fit_on) or load_task(data_dir, task, fit_on, cfg.data_format).head(cfg.limit)
        texts = [*ds.sentences1, *ds.sentences2]
        return texts, {"fit_on": fit_on, "splits": [fit_on], "path": ds.path, "sha256": ds.sha256,
                       "n_vectors": len(texts), "protocol": f"sentence1 and sentence2 of every pair of the {fit_on} split"}
    path = Path(fit_on)
    if not path.is_file():
        raise InputError(f"--fit-on {fit_on!r}: expected 'all', a split ({', '.join(SPLITS)}) or an existing file")
    texts = _corpus_texts(path)
    return texts, {"fit_on": "file", "path": str(path), "sha256": sha256_file(path), "n_vectors": len(texts),
                   "protocol": "every text of an external corpus file"}


_CORPUS_CACHE: dict[str, list[str]] = {}


def _corpus_texts(path: Path) -> list[str]:
    key = f"{path.resolve()}:{path.stat().st_mtime_ns}"
    if key not in _CORPUS_CACHE:
        if path.suffix == ".data":  # a senteval_cn pairs file: both sides
            ds = read_pairs_tsv(path, header=False)
            texts = [*ds.sentences1, *ds.sentences2]
        else:
            from simkit.corpus import read_corpus

            texts = [r.text for r in read_corpus(path)]
        _CORPUS_CACHE.clear()
        _CORPUS_CACHE[key] = texts
    return _CORPUS_CACHE[key]


# ----------------------------------------------------------------------- transforms
class _Transformer:
    """Applies the transforms of one (model, pooling) to the unique vectors ``X``.

    The full whitening is fitted once; ``whitening-k`` slices its output columns, which is
    ``X @ kernel[:, :k] + bias[:k]`` — the published truncation — without refitting.
    """

    def __init__(self, X: np.ndarray, fit_rows: np.ndarray, seed: int, notes: list[str], where: str):
        self.X, self.fit_rows, self.seed, self.notes, self.where = X, fit_rows, seed, notes, where
        self._white: np.ndarray | None = None

    def apply(self, spec: TransformSpec) -> np.ndarray | None:
        d = self.X.shape[1]
        if spec.n_components is not None and spec.n_components > d:
            self.notes.append(f"{self.where}: {spec.name} skipped (the vectors have {d} dimensions)")
            return None
        if spec.kind == "none":
            return self.X
        if spec.kind == "whitening":
            if self._white is None:
                # One BLAS thread: with torch's OpenMP threads alive, a multi-threaded OpenBLAS
                # eigh of a 256 x 256 covariance took 0.13-0.65 s instead of 0.01 s here.
                with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, user_api="blas"):
                    warnings.simplefilter("always")
                    # float64 like the published numpy code (float32 vectors + float64 kernel)
                    w = Whitening(n_components=None, dtype="float64").fit(self.X[self.fit_rows])
                self.notes.extend(f"{self.where}: {c.message}" for c in caught)
                self._white = w.transform(self.X)
            return self._white if spec.n_components is None else self._white[:, : spec.n_components]
        rp = RandomProjection(n_components=spec.n_components, random_state=self.seed)
        return rp.fit(self.X[self.fit_rows]).transform(self.X)


# ------------------------------------------------------------------------------ run
def _check_dimensions(models: Sequence[ModelSpec], transforms: Sequence[TransformSpec]) -> None:
    """Refuse a ``whitening-k`` / ``jl-k`` that no model has the dimensions for.

    A k between the models' sizes is a grid over models of different widths (the smaller ones
    skip it, with a note); a k above all of them is a typo that would leave the column empty.
    """
    dims = [m.encoder.get_sentence_embedding_dimension() for m in models if not m.is_baseline]
    for spec in transforms:
        if dims and spec.n_components is not None and spec.n_components > max(dims):
            raise ParameterError("jl" if spec.kind == "jl" else "whitening", spec.n_components,
                                 f"at most {max(dims)} dimensions (the widest model has {max(dims)})")


def run_grid(
    models: Sequence[ModelSpec],
    data_dir: str | Path,
    config: GridConfig,
    cache: EmbeddingCache | None = None,
) -> GridRun:
    """Score every model × pooling × transform on every task × split (see module doc)."""
    t_start = time.perf_counter()
    cache = cache if cache is not None else EmbeddingCache(None)
    if not models:
        raise InputError("no model to evaluate; give --model (or --model tfidf / --baseline tfidf)")
    for p in config.poolings:
        check_choice("pooling", p, GRID_POOLINGS)
    cells: list[Cell] = []
    notes: list[str] = []
    replicates: dict[tuple, np.ndarray] = {}
    tasks: dict[str, dict] = {}
    model_info: dict[str, dict] = {}
    for m in models:
        if m.is_baseline:
            model_info[m.name] = {"kind": BASELINE_NAME, "analyzer": "char", "ngram_range": [1, 1],
                                  "sublinear_tf": True, "fitted_on": "the fit set of each task"}
        else:
            model_info[m.name] = {"kind": "encoder", "fingerprint": cache.fingerprint(m.encoder),
                                  **m.encoder.model_card}
    _check_dimensions(models, config.transforms)
    # Read every file (and check the fit set) before encoding anything: a missing split of the
    # last task must not surface after an hour of encoding the first ones.
    loaded = {}
    for task in config.tasks:
        data = {s: load_task(data_dir, task, s, config.data_format).head(config.limit) for s in config.splits}
        loaded[task] = (data, *_fit_set(task, data, config, data_dir))
    for task in config.tasks:
        max_len = config.max_seq_length.get(task, DEFAULT_MAX_SEQ_LENGTH.get(task, 64))
        data, fit_texts, fit_info = loaded.pop(task)
        groups = [g for s in config.splits for g in (data[s].sentences1, data[s].sentences2)]
        uniq, rows = unique_texts(*groups, fit_texts)
        split_rows = {s: (rows[2 * i], rows[2 * i + 1]) for i, s in enumerate(config.splits)}
        fit_rows = rows[-1]
        info = tasks[task] = {"max_seq_length": max_len, "n_unique_sentences": len(uniq), "fit": fit_info,
                              "splits": {s: data[s].describe() for s in config.splits}, "models": {}}
        for s in config.splits:
            if data[s].skipped:
                notes.append(f"{data[s].path}: skipped {data[s].skipped} lines without exactly 3 fields")
        for m in models:
            if m.is_baseline:
                for c, cos in _baseline_cells(m.name, task, data, config.splits, fit_texts):
                    cells.append(c)
                    if config.bootstrap:
                        _bootstrap(c, cos, data[c.split].labels, config, replicates)
                continue
            poolings = [p for p in config.poolings if p != "pooler" or m.encoder.model.pooler is not None]
            if len(poolings) < len(config.poolings):
                notes.append(f"{m.name}: has no pooler; pooling 'pooler' skipped")
            logger.info("%s: %s, %d distinct sentences, max_seq_length %d", m.name, task, len(uniq), max_len)
            t0 = time.perf_counter()
            n_before = cache.n_encoded_
            vecs = cache.get_or_encode(m.encoder, uniq, poolings, max_len, batch_size=config.batch_size,
                                       show_progress_bar=config.show_progress_bar)
            info["models"][m.name] = {"encode_time": round(time.perf_counter() - t0, 3),
                                      "encoded": cache.n_encoded_ - n_before,
                                      "truncated": cache.last_truncated_}
            for p in poolings:
                tr = _Transformer(vecs[p], fit_rows, config.seed, notes, f"{m.name}/{p}/{task}")
                for spec in config.transforms:
                    t1 = time.perf_counter()
                    Y = tr.apply(spec)
                    if Y is None:
                        continue
                    t_fit = time.perf_counter() - t1
                    for s in config.splits:
                        t2 = time.perf_counter()
                        a_rows, b_rows = split_rows[s]
                        scores = sts_scores(Y[a_rows], Y[b_rows], data[s].labels)
                        cells.append(Cell(m.name, p, spec.name, task, s, scores, len(data[s]),
                                          round(t_fit + time.perf_counter() - t2, 4), spec.n_components))
                        if config.bootstrap:
                            cos = cosine_pairs(Y[a_rows], Y[b_rows])
                            _bootstrap(cells[-1], cos, data[s].labels, config, replicates)
        del data
    stats = {"encoded": cache.n_encoded_, "hits": cache.n_hits_, "passes": cache.n_passes_}
    return GridRun(cells, config, tasks, model_info, notes, stats, round(time.perf_counter() - t_start, 3),
                   replicates)


def _bootstrap(cell: Cell, cos: np.ndarray, labels: np.ndarray, config: GridConfig, out: dict) -> None:
    """Add a 95 % percentile interval of main_score to ``cell`` and keep its replicates.

    The generator is seeded by (seed, task, split) alone, so every model, pooling and transform
    is scored on the *same* resamples: the intervals of two rows are paired, and the replicates
    of the tasks can be averaged into an interval of the average (see report.summary).
    """
    task_i, split_i = list(config.tasks).index(cell.task), list(config.splits).index(cell.split)
    r = bootstrap_spearman(cos, labels, config.bootstrap, random_state=[config.seed, task_i, split_i])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN slice gives NaN bounds: fine
        low, high = np.nanpercentile(r, [2.5, 97.5])
    cell.scores.update(main_score_ci_low=float(low), main_score_ci_high=float(high))
    out[(cell.model, cell.pooling, cell.transform, cell.task, cell.split)] = r


def _baseline_cells(name: str, task: str, data: dict[str, PairDataset], splits,
                    fit_texts) -> list[tuple[Cell, np.ndarray]]:
    t0 = time.perf_counter()
    enc = TfidfEncoder().fit(fit_texts)
    t_fit = time.perf_counter() - t0
    out = []
    for s in splits:
        t1 = time.perf_counter()
        cos = enc.similarity(data[s].sentences1, data[s].sentences2)
        out.append((Cell(name, "-", "none", task, s, similarity_scores(cos, data[s].labels), len(data[s]),
                         round(t_fit + time.perf_counter() - t1, 4)), cos))
    return out
