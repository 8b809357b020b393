"""Carve held-out parts of STS valid splits *by sentence*, not by line.

A pair whose sentence also occurs in training data measures memory, not generalisation: in
BQ's valid split 85 % of a line-carved part's sentences occur in the other lines. So:

1. pairs that share a sentence (whitespace removed) are joined into components, and each
   component goes whole to ``select`` or ``report`` (a seeded hash of its smallest
   sentence decides), so no sentence is in both parts;
2. a pair is kept only if neither sentence occurs in any ``seen`` file (every file the
   model was trained on, its initialisation's data included); the others are counted.

The parts are written as ``OUT/<TASK>/<TASK>.select.data`` and ``.report.data``, so
``simkit eval sts -d OUT --split select`` (model selection) and ``--split report`` read
them; ``config.json`` records the sizes and the sha256 of every input.

>>> carve("data/chinese-sts", ["ATEC", "BQ"], seen=["pairs/bq-train.tsv"], output="parts")  # doctest: +SKIP
{"tasks": {"ATEC": {"select": 9520, "report": 9525, "dropped_seen": 955, ...}, ...}, ...}
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from simkit.errors import InputError, ParameterError
from simkit.fsutil import atomic_dir, write_json
from simkit.pairs import read_pair_lines

from .data import senteval_path, sha256_file

FORMAT = "simkit-sts-carve"
_SPACE = re.compile(r"\s+")


def sentence_key(text: str) -> str:
    """What makes two sentences the same here: their text with all whitespace removed."""
    return _SPACE.sub("", text)


def seen_sentences(files: list[str | os.PathLike]) -> set[str]:
    """Sentence keys of training files: the first two tab-separated fields of each line
    (pairs, NLI) or the whole line (one sentence a line)."""
    seen: set[str] = set()
    for f in files:
        path = Path(f)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read as UTF-8 text ({e.__class__.__name__})") from None
        for line in text.splitlines():
            for field in line.split("\t")[:2]:
                key = sentence_key(field)
                if key:
                    seen.add(key)
    return seen


def _component_part(keys: list[str], report_fraction: float, seed: int) -> str:
    h = hashlib.sha256(f"{seed}\0{min(keys)}".encode()).digest()
    return "report" if int.from_bytes(h[:8], "big") / 2**64 < report_fraction else "select"


def split_pairs(rows: list[tuple[str, str, str]], seen: set[str], report_fraction: float = 0.5,
                seed: int = 0) -> tuple[dict[str, list[tuple[str, str, str]]], dict[str, int]]:
    """``rows`` (a, b, label) into ``{"select": [...], "report": [...]}`` and counts."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in rows:
        ra, rb = find(sentence_key(a)), find(sentence_key(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[str, list[str]] = {}
    for k in list(parent):
        members.setdefault(find(k), []).append(k)
    part_of = {root: _component_part(keys, report_fraction, seed) for root, keys in members.items()}
    parts: dict[str, list] = {"select": [], "report": []}
    dropped = 0
    for a, b, label in rows:
        ka, kb = sentence_key(a), sentence_key(b)
        if ka in seen or kb in seen:
            dropped += 1
            continue
        parts[part_of[find(ka)]].append((a, b, label))
    counts = {"lines": len(rows), "select": len(parts["select"]), "report": len(parts["report"]),
              "dropped_seen": dropped, "components": len(members),
              "largest_component_sentences": max((len(v) for v in members.values()), default=0)}
    return parts, counts


def carve(data_dir: str | os.PathLike, tasks: list[str], seen: list[str | os.PathLike],
          output: str | os.PathLike, split: str = "valid", report_fraction: float = 0.5,
          seed: int = 0, overwrite: bool = False) -> dict:
    """Write the select / report parts of each task's ``split`` under ``output``."""
    if not 0 < report_fraction < 1:
        raise ParameterError("report_fraction", report_fraction, "a number in (0, 1)")
    seen_keys = seen_sentences(seen)
    summary: dict = {"format": FORMAT, "format_version": 1, "split": split,
                     "report_fraction": report_fraction, "seed": seed, "seen_sentences": len(seen_keys),
                     "seen_files": {str(Path(f)): sha256_file(Path(f)) for f in seen}, "tasks": {}}
    carved = {}
    for task in tasks:
        path = senteval_path(data_dir, task, split)
        if not path.is_file():
            raise InputError(f"{path}: {'is a directory' if path.is_dir() else 'not found'} "
                             f"(expected DIR/<TASK>/<TASK>.{split}.data)")
        lines = read_pair_lines(path)
        rows = [(a, b, label) for _, a, b, label in lines.rows]
        parts, counts = split_pairs(rows, seen_keys, report_fraction, seed)
        carved[task] = parts
        summary["tasks"][task] = {**counts, "skipped_lines": lines.skipped, "source": str(path),
                                  "sha256": sha256_file(path)}
    with atomic_dir(output, overwrite=overwrite, kind=FORMAT, versioned=False) as tmp:
        for task, parts in carved.items():
            (tmp / task).mkdir()
            for name, rows in parts.items():
                with open(tmp / task / f"{task}.{name}.data", "w", encoding="utf-8", newline="\n") as f:
                    f.writelines(f"{a}\t{b}\t{label}\n" for a, b, label in rows)
        write_json(tmp / "config.json", summary)
    return summary

