"""Sentence-pair files in the ``senteval_cn`` layout: ``sentence1 \\t sentence2 \\t label``.

One reader for training and evaluation: lines are split like the reference loader (the
line stripped, then split on tabs); lines without exactly three fields are counted (with
the first few named), never dropped silently. Labels stay strings here: training and the
STS harness parse and check them by their own rules.

>>> lines = read_pair_lines("BQ.valid.data")                        # doctest: +SKIP
>>> lines.rows[0]        # (line number, sentence1, sentence2, label text)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .errors import InputError, no_file


@dataclasses.dataclass
class PairLines:
    rows: list[tuple[int, str, str, str]]
    n_lines: int
    skipped: int
    skipped_lines: list[str]  # the first few, as "file:line: N fields"


def read_pair_lines(path: str | os.PathLike) -> PairLines:
    """The 3-field lines of a pair file; bad UTF-8 is an error naming the line."""
    path = Path(path)
    if not path.is_file():
        raise no_file(path)
    rows, skipped_lines = [], []
    skipped = n_lines = 0
    with open(path, encoding="utf-8") as f:
        try:
            for n_lines, line in enumerate(f, 1):
                fields = line.strip().split("\t")
                if len(fields) != 3:
                    skipped += 1
                    if len(skipped_lines) < 5:
                        skipped_lines.append(f"{path}:{n_lines}: {len(fields)} fields")
                    continue
                rows.append((n_lines, fields[0], fields[1], fields[2]))
        except UnicodeDecodeError as e:
            raise InputError(f"{path}:{n_lines + 1}: not UTF-8 ({e.reason})") from None
    return PairLines(rows, n_lines, skipped, skipped_lines)
