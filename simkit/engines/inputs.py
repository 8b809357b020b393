"""Inputs of an encoding job: files, directories and globs; records from txt / jsonl / tsv /
csv (:func:`simkit.corpus.read_corpus`) and parquet (:func:`read_parquet`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path

from ..corpus import CorpusStats, Record, detect_format, read_corpus
from ..errors import InputError, no_file

FORMATS = ("auto", "txt", "jsonl", "tsv", "csv", "parquet")


def expand_inputs(inputs) -> list[Path]:
    """Files named, in the order given: a glob (``data/*.txt``) expands sorted, a directory to
    its files sorted by name. A pattern that matches nothing, or a missing file, is an error."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        s = str(item)
        if Path(s).is_dir():
            found = sorted(p for p in Path(s).iterdir() if p.is_file() and not p.name.startswith("."))
        elif any(c in s for c in "*?["):
            found = [Path(p) for p in sorted(glob.glob(s, recursive=True)) if Path(p).is_file()]
        elif Path(s).is_file():
            found = [Path(s)]
        else:
            raise no_file(s)
        if not found:
            raise InputError(f"{s}: matches no file")
        files.extend(found)
    if not files:
        raise InputError("no input files given")
    return files


def input_format(path: Path, fmt: str = "auto") -> str:
    """The format of ``path``: ``fmt`` unless ``auto``; ``.parquet`` or the corpus suffixes."""
    if fmt == "parquet" or (fmt == "auto" and path.suffix.lower() == ".parquet"):
        return "parquet"
    return detect_format(path, fmt)


def read_records(path: str | os.PathLike, format: str = "auto", text_field: str | None = None,
                 id_field: str | None = None, stats: CorpusStats | None = None) -> Iterator[Record]:
    """The records of one input file, as :func:`~simkit.corpus.read_corpus` (parquet too)."""
    path = Path(path)
    if input_format(path, format) == "parquet":
        return read_parquet(path, text_field, id_field, stats)
    return read_corpus(path, format, text_field, id_field, stats)


def read_parquet(path: str | os.PathLike, text_field: str | None = None, id_field: str | None = None,
                 stats: CorpusStats | None = None, batch_rows: int = 65536) -> Iterator[Record]:
    """Records of a parquet file: column ``text_field`` (default ``text``) and ``id_field``
    (default ``id`` if present, else the 1-based row number), streamed in row batches."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{path}: reading parquet needs pyarrow: pip install 'simkit[ray]' "
                         "(or pip install pyarrow)") from None
    path = Path(path)
    stats = stats if stats is not None else CorpusStats()
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError kinds
        raise InputError(f"{path}: not a readable parquet file ({e})") from None
    names = pf.schema_arrow.names
    text_col = text_field or "text"
    if text_col not in names:
        raise InputError(f"{path}: no column {text_col!r}; columns are {names} (use --text-field)")
    if id_field is not None and id_field not in names:
        raise InputError(f"{path}: no id column {id_field!r}; columns are {names}")
    id_col = id_field or ("id" if "id" in names else None)
    row = 0
    for batch in pf.iter_batches(batch_size=batch_rows, columns=[c for c in (text_col, id_col) if c]):
        texts = batch.column(text_col).to_pylist()
        ids = batch.column(id_col).to_pylist() if id_col else None
        for j, text in enumerate(texts):
            row += 1
            if not isinstance(text, str):
                raise InputError(f"{path}: row {row}: column {text_col!r} is {type(text).__name__}, "
                                 "expected a string")
            stats.records += 1
            stats.empty += text == ""
            yield Record(str(ids[j]) if ids is not None else str(row), text, row)
    if stats.records == 0:
        raise InputError(f"{path}: empty input; no records found")
