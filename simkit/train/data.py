"""Training data: labelled pair files and groups of similar sentences.

* Pair files in the ``senteval_cn`` layout: ``sentence1 \\t sentence2 \\t label`` with 0/1 or
  graded (0-5) labels. Only 3-field lines are kept (as the reference loader does); the others
  are counted, never silently ignored.
* JSONL groups: one JSON list of similar sentences per line (or ``{"texts": [...]}``); every
  ordered pair inside a group is a positive.
* NLI files ``premise \t hypothesis \t entailment|neutral|contradiction``: triples (premise,
  an entailed hypothesis, a contradicting one) for supervised SimCSE.
* Sentence files: one unlabelled sentence a line, for masked-LM training.

>>> pairs = read_pairs("STS-B.train.data")          # doctest: +SKIP
>>> pos = positive_pairs(pairs, threshold=4)         # [(a, b), ...]
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError, no_file
from ..fsutil import os_error
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
            value = float(label)
        except ValueError:
            raise InputError(f"{path}:{no}: label {label!r} is not a number") from None
        if not math.isfinite(value):  # a NaN label would poison the CoSENT loss
            raise InputError(f"{path}:{no}: label {label!r} is not a finite number")
        out.append(LabelledPair(a.strip(), b.strip(), value))
    if lines.skipped:
        log.warning("%s: skipped %d lines without exactly 3 tab-separated fields", path, lines.skipped)
    if not out:
        raise InputError(f"{path}: no 'sentence1<TAB>sentence2<TAB>label' lines found")
    return out


def read_groups(path: str | Path) -> list[list[str]]:
    """Groups of similar sentences from JSONL (a list, or an object with ``texts``)."""
    path = Path(path)
    if not path.is_file():
        raise no_file(path)
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


NLI_LABELS = ("entailment", "neutral", "contradiction")


def read_nli_triples(path: str | Path) -> list[tuple[str, str, str]]:
    """(premise, entailment, contradiction) triples: every premise with at least one of each;
    its entailed and contradicting hypotheses are paired in order, the shorter list cycled."""
    path = Path(path)
    lines = read_pair_lines(path)
    by_premise: dict[str, dict[str, list[str]]] = {}
    for no, a, b, label in lines.rows:
        label = label.strip().lower()
        if label not in NLI_LABELS:
            raise InputError(f"{path}:{no}: label {label!r}; expected one of {', '.join(NLI_LABELS)}")
        if a.strip() and b.strip():
            by_premise.setdefault(a.strip(), {}).setdefault(label, []).append(b.strip())
    triples = []
    for premise, hyps in by_premise.items():
        pos, neg = hyps.get("entailment", []), hyps.get("contradiction", [])
        for i in range(max(len(pos), len(neg)) if pos and neg else 0):
            triples.append((premise, pos[i % len(pos)], neg[i % len(neg)]))
    if not triples:
        raise InputError(f"{path}: no premise with both an entailment and a contradiction")
    return triples


def read_sentences(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise os_error(e, path, "read") from None
    out = [line.strip() for line in text.splitlines() if line.strip()]
    if not out:
        raise InputError(f"{path}: no sentences (expected one a line)")
    return out


def sentences_of(files: Sequence[str | Path]) -> list[str]:
    """Distinct sentences of sentence files (``.txt``: one a line) and of pair / NLI files
    (other suffixes: both tab-separated columns, labels ignored), in first-seen order."""
    out: dict[str, None] = {}
    for f in files:
        if str(f).endswith(".txt"):
            out.update(dict.fromkeys(read_sentences(f)))
        else:
            for _, a, b, _label in read_pair_lines(Path(f)).rows:
                out.update(dict.fromkeys(t for t in (a.strip(), b.strip()) if t))
    return list(out)
