"""Sentence-pair datasets: the ``senteval_cn`` files, any TSV of pairs, and C-MTEB copies.

>>> ds = load_task("data/chinese-sts", "STS-B", "valid")         # doctest: +SKIP
>>> len(ds), ds.labels.shape, ds.skipped                         # (1458, (1458,), 0)

``senteval_cn`` layout (BERT-whitening, SimBERT, RoFormer-Sim, CoSENT)::

    DIR/<TASK>/<TASK>.{train,valid,test}.data      sentence1 \\t sentence2 \\t label

Lines are parsed as the reference loader does, ``line.strip().split('\\t')``, and only lines
with exactly three fields are kept; the others are counted (``skipped``) and the first few
are named in ``skipped_lines``. C-MTEB copies (``C-MTEB/ATEC`` …) are read from a local
directory: a ``datasets`` ``save_to_disk`` folder, a hub snapshot with parquet files, or
plain ``.jsonl`` / ``.csv`` / ``.parquet`` files with the columns ``sentence1``,
``sentence2``, ``score``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np

from simkit.errors import InputError, check_choice, no_file
from simkit.pairs import read_pair_lines

TASKS: tuple[str, ...] = ("ATEC", "BQ", "LCQMC", "PAWSX", "STS-B")
SPLITS: tuple[str, ...] = ("train", "valid", "test")
# C-MTEB names the STS-B copy "STSB" and the valid split "validation".
CMTEB_NAMES = {"ATEC": "ATEC", "BQ": "BQ", "LCQMC": "LCQMC", "PAWSX": "PAWSX", "STS-B": "STSB"}
SPLIT_ALIASES = {"valid": ("valid", "validation", "dev"), "test": ("test",), "train": ("train",)}
# The reference's max_len per task (BERT-whitening chn/eval.py): 64, PAWSX 128.
DEFAULT_MAX_SEQ_LENGTH = {"ATEC": 64, "BQ": 64, "LCQMC": 64, "PAWSX": 128, "STS-B": 64}
LABEL_RANGE = {"ATEC": (0, 1), "BQ": (0, 1), "LCQMC": (0, 1), "PAWSX": (0, 1), "STS-B": (0, 5)}
PAIR_SUFFIXES = (".tsv", ".txt", ".data")
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
DataFormat = Literal["auto", "senteval", "cmteb"]


@dataclasses.dataclass
class PairDataset:
    """Scored sentence pairs of one task split; ``labels`` float64 (n,)."""

    task: str
    split: str
    sentences1: list[str]
    sentences2: list[str]
    labels: np.ndarray
    path: str
    sha256: str
    n_lines: int = 0
    skipped: int = 0
    skipped_lines: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int | None) -> PairDataset:
        """The first ``n`` pairs (all when ``n`` is None): for quick runs and benchmarks."""
        if n is None or n >= len(self):
            return self
        return dataclasses.replace(self, sentences1=self.sentences1[:n],
                                   sentences2=self.sentences2[:n], labels=self.labels[:n])

    def describe(self) -> dict:
        return {"task": self.task, "split": self.split, "path": self.path, "sha256": self.sha256,
                "n_pairs": len(self), "n_lines": self.n_lines, "skipped": self.skipped,
                "skipped_lines": self.skipped_lines}


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _label(value: str, where: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise InputError(f"{where}: label {value!r} is not a number") from None
    if not math.isfinite(x):
        raise InputError(f"{where}: label {value!r} is not finite")
    return x


def _check_labels(ds: PairDataset, where: list[str]) -> None:
    """Known tasks have known label ranges (0/1, STS-B 0-5): refuse anything else."""
    lo_hi = LABEL_RANGE.get(ds.task)
    if lo_hi is None or not len(ds):
        return
    bad = np.flatnonzero((ds.labels < lo_hi[0]) | (ds.labels > lo_hi[1]))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"{where[i]}: label {ds.labels[i]:g} is outside {lo_hi[0]}..{lo_hi[1]} "
                         f"expected for {ds.task} ({bad.size} such lines)")


def read_pairs_tsv(path: str | os.PathLike, task: str = "pairs", split: str = "test",
                   header: bool | None = None) -> PairDataset:
    """``sentence1 \\t sentence2 \\t score`` lines, parsed like the reference loader.

    ``header=None`` skips a first line whose third field is not a number (a column header).
    """
    path = Path(path)
    lines = read_pair_lines(path)
    s1, s2, labels, where = [], [], [], []
    for no, a, b, label in lines.rows:
        if no == 1 and header is not False:
            try:
                float(label)
            except ValueError:
                continue  # a header row
            if header:
                continue
        labels.append(_label(label, f"{path}:{no}"))
        s1.append(a)
        s2.append(b)
        where.append(f"{path}:{no}")
    if not labels:
        raise InputError(f"{path}: no 'sentence1<TAB>sentence2<TAB>score' lines "
                         f"({lines.n_lines} lines, {lines.skipped} without 3 fields)")
    ds = PairDataset(task, split, s1, s2, np.asarray(labels, dtype=np.float64), str(path),
                     sha256_file(path), lines.n_lines, lines.skipped, lines.skipped_lines)
    _check_labels(ds, where)
    return ds


def senteval_path(data_dir: str | os.PathLike, task: str, split: str) -> Path:
    return Path(data_dir) / task / f"{task}.{split}.data"


def load_senteval(data_dir: str | os.PathLike, task: str, split: str) -> PairDataset:
    """``DIR/<TASK>/<TASK>.<split>.data``; errors list the splits that exist.

    Any task name works in this layout (your own pairs too); the five known tasks also get
    their label ranges checked.
    """
    path = senteval_path(data_dir, task, split)
    if not path.is_file():
        have = sorted(p.name for p in (Path(data_dir) / task).glob(f"{task}.*.data") if p.is_file())
        what = "is a directory" if path.is_dir() else "no such file"
        raise InputError(f"{path}: {what}; found for {task}: {', '.join(have) or 'nothing'}")
    return read_pairs_tsv(path, task, split, header=False)


# ------------------------------------------------------------------------------ C-MTEB
def _require_datasets():
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "reading a Hugging Face `save_to_disk` folder needs the `datasets` package: "
            "pip install datasets (or export the split to .jsonl / .csv)"
        ) from None
    return datasets


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"{path}: reading parquet needs pyarrow: pip install pyarrow") from None
    return pq.read_table(path, columns=["sentence1", "sentence2", "score"]).to_pylist()


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return _read_parquet(path)
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return rows


def _rows_to_dataset(rows: list[dict], task: str, split: str, where: str, sha: str) -> PairDataset:
    s1, s2, labels, places = [], [], [], []
    for i, r in enumerate(rows, 1):
        place = f"{where}: row {i}"
        if not isinstance(r, dict) or not {"sentence1", "sentence2", "score"} <= r.keys():
            found = sorted(r) if isinstance(r, dict) else type(r).__name__
            raise InputError(f"{place}: expected the fields sentence1, sentence2, score; found {found}")
        s1.append(str(r["sentence1"]))
        s2.append(str(r["sentence2"]))
        labels.append(_label(str(r["score"]), place))
        places.append(place)
    ds = PairDataset(task, split, s1, s2, np.asarray(labels, dtype=np.float64), where, sha, len(rows))
    _check_labels(ds, places)
    return ds


def read_pairs_table(path: str | os.PathLike, task: str = "pairs", split: str = "test") -> PairDataset:
    """One .jsonl / .csv / .parquet file with the C-MTEB columns sentence1, sentence2, score."""
    path = Path(path)
    if not path.is_file():
        raise no_file(path)
    return _rows_to_dataset(_read_rows(path), task, split, str(path), sha256_file(path))


def _split_files(folder: Path, split: str) -> list[Path]:
    """Files of a split in a C-MTEB folder: ``data/validation-00000-of-00001-….parquet`` etc."""
    names = SPLIT_ALIASES.get(split, (split,))
    found = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in TABLE_SUFFIXES:
            stem = p.name.split(".")[0]
            if any(stem == n or stem.startswith((n + "-", n + "_")) for n in names):
                found.append(p)
    return found


def load_cmteb(folder: str | os.PathLike, task: str, split: str) -> PairDataset:
    """A local copy of a C-MTEB STS dataset (see module doc), one split."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such directory")
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        ds = _require_datasets().load_from_disk(str(folder))
        if (folder / "dataset_dict.json").is_file():
            name = next((n for n in SPLIT_ALIASES.get(split, (split,)) if n in ds), None)
            if name is None:
                raise InputError(f"{folder}: no split {split!r}; found {', '.join(ds)}")
            ds = ds[name]
            files = sorted((folder / name).glob("*.arrow"))
        else:
            files = sorted(folder.glob("*.arrow"))
        h = hashlib.sha256()
        for f in files:
            h.update(bytes.fromhex(sha256_file(f)))
        return _rows_to_dataset(ds.to_list(), task, split, str(folder), h.hexdigest())
    files = _split_files(folder, split)
    if not files:
        raise InputError(f"{folder}: no {'/'.join(SPLIT_ALIASES.get(split, (split,)))} file "
                         f"({', '.join(TABLE_SUFFIXES)}) for split {split!r}")
    rows: list[dict] = []
    h = hashlib.sha256()
    for f in files:  # shards -00000-of-00002 … in name order
        rows.extend(_read_rows(f))
        h.update(bytes.fromhex(sha256_file(f)))
    sha = sha256_file(files[0]) if len(files) == 1 else h.hexdigest()
    where = str(files[0]) if len(files) == 1 else f"{folder} ({len(files)} files)"
    return _rows_to_dataset(rows, task, split, where, sha)


def cmteb_folder(data_dir: str | os.PathLike, task: str) -> Path | None:
    """``DIR/<TASK>`` or ``DIR/<C-MTEB name>`` (e.g. ``STSB``), case-insensitively."""
    data_dir = Path(data_dir)
    wanted = {task.lower(), CMTEB_NAMES.get(task, task).lower()}
    if data_dir.is_dir():
        for p in sorted(data_dir.iterdir()):
            if p.is_dir() and p.name.lower().split("___")[-1] in wanted:
                return p
    return None


def load_task(data_dir: str | os.PathLike, task: str, split: str,
              data_format: DataFormat = "auto") -> PairDataset:
    """One split of a task, from a senteval_cn layout (any task name) or a C-MTEB directory
    (the five known tasks)."""
    check_choice("data format", data_format, ("auto", "senteval", "cmteb"))
    if not Path(data_dir).is_dir():
        raise InputError(f"{data_dir}: no such data directory")
    if data_format == "senteval" or (
        data_format == "auto" and any((Path(data_dir) / task).glob(f"{task}.*.data"))
    ):
        return load_senteval(data_dir, task, split)
    if task not in TASKS:
        raise InputError(f"{data_dir}: no {task}/{task}.*.data files, and {task!r} is not a C-MTEB "
                         f"task (those are: {', '.join(TASKS)})")
    folder = cmteb_folder(data_dir, task)
    if folder is None:
        raise InputError(f"{data_dir}: no {task}/ folder (senteval_cn: {task}/{task}.{split}.data; "
                         f"C-MTEB: {CMTEB_NAMES[task]}/ with .parquet/.jsonl/.csv)")
    return load_cmteb(folder, task, split)


def unique_texts(*groups: list[str]) -> tuple[list[str], list[np.ndarray]]:
    """Distinct texts in first-seen order, and each group's rows into that list.

    >>> unique_texts(["a", "b"], ["b", "c"])   # (['a', 'b', 'c'], [array([0, 1]), array([1, 2])])
    """
    index: dict[str, int] = {}
    rows = []
    for g in groups:
        rows.append(np.fromiter((index.setdefault(t, len(index)) for t in g), dtype=np.int64,
                                count=len(g)))
    return list(index), rows
