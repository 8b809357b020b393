"""Training data: labelled pair files and groups of similar sentences.

* Pair files in the ``senteval_cn`` layout: ``sentence1 \\t sentence2 \\t label`` with 0/1 or
  graded (0-5) labels. Only 3-field lines are kept (as the reference loader does); the others
  are counted, never silently ignored.
* JSONL groups: one JSON list of similar sentences per line (or ``{"texts": [...]}``); every
  ordered pair inside a group is a positive.

>>> pairs = read_pairs("STS-B.train.data")          # doctest: +SKIP
>>> pos = positive_pairs(pairs, threshold=4)         # [(a, b), ...]
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from ..pairs import read_pair_lines

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LabelledPair:
    a: str
    b: str
    label: float
    source: int = 0  # which input file: CoSENT ranks labels only within one file's scale


def read_pairs(path: str | Path) -> list[LabelledPair]:
    """Labelled pairs of a TSV file; bad lines are counted and logged, and a file without
    any good line is an error naming it."""
    path = Path(path)
    lines = read_pair_lines(path)
    out = []
    for no, a, b, label in lines.rows:
        try:
            out.append(LabelledPair(a.strip(), b.strip(), float(label)))
        except ValueError:
            raise InputError(f"{path}:{no}: label {label!r} is not a number") from None
    if lines.skipped:
        log.warning("%s: skipped %d lines without exactly 3 tab-separated fields", path, lines.skipped)
    if not out:
        raise InputError(f"{path}: no 'sentence1<TAB>sentence2<TAB>label' lines found")
    return out


def read_groups(path: str | Path) -> list[list[str]]:
    """Groups of similar sentences from JSONL (a list, or an object with ``texts``)."""
    path = Path(path)
    groups = []
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{no}: not valid JSON ({e.msg})") from None
        texts = obj.get("texts") if isinstance(obj, dict) else obj
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InputError(f"{path}:{no}: expected a list of strings or {{\"texts\": [...]}}")
        groups.append([t for t in texts if t.strip()])
    return groups


def positive_pairs(pairs: Sequence[LabelledPair], threshold: float = 1.0) -> list[tuple[str, str]]:
    """Pairs whose label is at least ``threshold`` (1 for 0/1 labels, e.g. 4 for STS-B)."""
    return [(p.a, p.b) for p in pairs if p.label >= threshold and p.a and p.b and p.a != p.b]


def group_pairs(groups: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    return [(a, b) for g in groups for a, b in itertools.combinations(dict.fromkeys(g), 2)]


def load_training_files(
    files: Sequence[str | Path], threshold: float = 1.0, graded_threshold: float = 4.0
) -> tuple[list[tuple[str, str]], list[LabelledPair]]:
    """Positive pairs and labelled pairs from a mix of ``.jsonl`` groups and TSV pair files.

    A TSV file whose labels go above 1 is graded (STS-B): its positives are the pairs with a
    label >= ``graded_threshold``; otherwise those >= ``threshold``.
    """
    positives: list[tuple[str, str]] = []
    labelled: list[LabelledPair] = []
    for source, f in enumerate(files):
        if str(f).endswith(".jsonl"):
            positives += group_pairs(read_groups(f))
            continue
        pairs = read_pairs(f)
        graded = max(p.label for p in pairs) > 1
        positives += positive_pairs(pairs, graded_threshold if graded else threshold)
        labelled += [dataclasses.replace(p, source=source) for p in pairs]
    return positives, labelled
