"""Streaming corpus readers: txt, jsonl, tsv, csv.

Every reader yields :class:`Record` ``(id, text, line)`` lazily, so a corpus larger than
memory can be encoded chunk by chunk. The default id of a record is its 1-based line number
in the file, so ids never shift.

Empty-text policy: an empty line of a ``.txt`` file is a record with empty text (it is
encoded like any other text, and counted as ``empty``); a blank line of a ``.jsonl`` file is
not a record and is skipped (counted as ``blank``). Nothing is dropped silently.

>>> for rec in read_corpus("faq.jsonl", text_field="question"):   # doctest: +SKIP
...     print(rec.id, rec.text)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from .errors import InputError, check_choice, no_file
from .fsutil import os_error

CorpusFormat = Literal["auto", "txt", "jsonl", "tsv", "csv"]
FORMATS = ("auto", "txt", "jsonl", "tsv", "csv")
_SUFFIX = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv", ".csv": "csv"}


@dataclasses.dataclass
class Record:
    id: str
    text: str
    line: int


@dataclasses.dataclass
class CorpusStats:
    records: int = 0
    empty: int = 0
    blank: int = 0


def detect_format(path: str | os.PathLike, fmt: str = "auto") -> str:
    check_choice("format", fmt, FORMATS)
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX:
        raise InputError(
            f"{path}: cannot tell the format from the suffix {suffix!r}; "
            f"expected one of {', '.join(_SUFFIX)} or pass --format"
        )
    return _SUFFIX[suffix]


def _raw_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line *with* its line end); LF, CRLF and CR-only all end a line.

    Invalid UTF-8 and lone surrogates are errors naming the line.
    """
    no = 0
    try:
        f = open(path, "rb")
    except OSError as e:
        raise os_error(e, path, "read") from None
    with f:
        for chunk in f:  # split at LF by the file; CR / CRLF inside a chunk split below
            for raw in chunk.splitlines(keepends=True) if b"\r" in chunk else (chunk,):
                no += 1
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InputError(f"{path}:{no}: invalid UTF-8 at byte {e.start} of the line") from None
                if no == 1 and line.startswith("\ufeff"):
                    line = line[1:]  # a BOM is not text
                yield no, line


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line without its line end)."""
    for no, line in _raw_lines(path):
        yield no, line.rstrip("\r\n")


def _check_str(path: Path, no: int, what: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{path}:{no}: {what} contains a lone surrogate {value[e.start]!r} "
                         f"at character {e.start} (not valid Unicode text)") from None


def read_corpus(
    path: str | os.PathLike,
    format: CorpusFormat = "auto",
    text_field: str | None = None,
    id_field: str | None = None,
    stats: CorpusStats | None = None,
) -> Iterator[Record]:
    """Yield the records of a corpus file (see the module docstring for the policy).

    ``text_field`` / ``id_field`` name the JSON field or the CSV/TSV column (defaults ``text``
    and ``id``; a missing ``id`` falls back to the line number, a missing text field is an
    error naming the line).
    """
    path = Path(path)
    if not path.is_file():
        raise no_file(path)
    fmt = detect_format(path, format)
    stats = stats if stats is not None else CorpusStats()
    if fmt == "txt":
        if text_field or id_field:
            raise InputError(f"{path}: --text-field/--id-field apply to jsonl, tsv and csv, not txt")
        it = ((Record(str(no), line, no)) for no, line in _lines(path))
    elif fmt == "jsonl":
        it = _read_jsonl(path, text_field or "text", id_field, stats)
    else:
        it = _read_table(path, "," if fmt == "csv" else "\t", text_field or "text", id_field)
    seen: dict[str, int] = {}  # id -> line: a duplicate id is an error naming both lines
    for rec in it:
        first = seen.setdefault(rec.id, rec.line)
        if first != rec.line:
            raise InputError(f"{path}:{rec.line}: duplicate id {rec.id!r} (first on line {first})")
        stats.records += 1
        stats.empty += rec.text == ""
        yield rec
    if stats.records == 0:
        raise InputError(f"{path}: empty input; no records found")


def _read_jsonl(path: Path, text_field: str, id_field: str | None, stats: CorpusStats):
    for no, line in _lines(path):
        if not line.strip():
            stats.blank += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{no}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{no}: expected a JSON object, found {type(obj).__name__}")
        if text_field not in obj:
            raise InputError(
                f"{path}:{no}: no field {text_field!r}; fields are {sorted(obj)} (use --text-field)"
            )
        text = obj[text_field]
        if not isinstance(text, str):
            raise InputError(f"{path}:{no}: field {text_field!r} is {type(text).__name__}, expected a string")
        if id_field is not None and id_field not in obj:
            raise InputError(f"{path}:{no}: no id field {id_field!r}; fields are {sorted(obj)}")
        _check_str(path, no, f"field {text_field!r}", text)
        rid = obj.get(id_field or "id", no)
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            raise InputError(f"{path}:{no}: id {rid!r} is {type(rid).__name__}; "
                             "ids must be strings or integers")
        if isinstance(rid, str):
            _check_str(path, no, "id", rid)
        yield Record(rid if isinstance(rid, str) else str(rid), text, no)


def _read_table(path: Path, delimiter: str, text_col: str, id_col: str | None):
    """CSV / TSV with the csv module's quoting rules over the whole file (a quoted field may
    hold delimiters, quotes as ``""`` and line ends); malformed quoting is an error naming the
    line where the record starts, never a silently merged or altered record."""
    lines = (line for _, line in _raw_lines(path))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    last = 0  # reader.line_num after the previous record: this record starts on last + 1

    def rows():
        nonlocal last
        while True:
            start = last + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                what = ("an unclosed quote runs to the end of the file" if "unexpected end of data" in str(e)
                        else f"malformed quoting ({e}); quote the whole field and double inner quotes")
                raise InputError(f"{path}:{start}: {what}") from None
            last = reader.line_num
            yield start, row

    it = rows()
    try:
        _, header = next(it)
    except StopIteration:
        return
    if text_col not in header:
        raise InputError(f"{path}:1: no column {text_col!r}; columns are {header} (use --text-field)")
    if id_col is not None and id_col not in header:
        raise InputError(f"{path}:1: no id column {id_col!r}; columns are {header}")
    ti = header.index(text_col)
    ii = header.index(id_col) if id_col else (header.index("id") if "id" in header else None)
    for no, row in it:
        if not row:
            continue
        if len(row) != len(header):
            raise InputError(f"{path}:{no}: {len(row)} fields, expected {len(header)} as in the header")
        yield Record(row[ii] if ii is not None else str(no), row[ti], no)
