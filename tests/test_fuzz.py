"""Corpus readers never lose or change a record, and loaders of damaged artifacts raise only
simkit's own errors (issue 18): the cases of the issue, then property-based fuzz (hypothesis)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from simkit.corpus import read_corpus
from simkit.errors import InputError, SimkitError
from simkit.fsutil import atomic_dir, resolve_version
from simkit.index import LSHIndex, VectorIndex, load_index
from simkit.store import EmbeddingStore
from simkit.transforms import Chain, Normalize, Whitening, load_transform, save_transform

# Modest by default so the suite stays fast; SIMKIT_FUZZ_EXAMPLES=1000 for a longer hunt.
FUZZ = settings(max_examples=int(os.environ.get("SIMKIT_FUZZ_EXAMPLES", 60)), deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _recs(path, **kw):
    return [(r.id, r.text) for r in read_corpus(path, **kw)]


# -- the cases of the issue ---------------------------------------------------------------------
def test_tsv_unclosed_quote_names_the_line(tmp_path):
    p = tmp_path / "c.tsv"
    p.write_text('id\ttext\n1\t"你好\n2\t借呗\n3\t花呗\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"c.tsv:2: an unclosed quote"):
        _recs(p)


def test_tsv_text_after_closing_quote_is_an_error_not_a_change(tmp_path):
    p = tmp_path / "c.tsv"
    p.write_text('id\ttext\n1\t"你好"吗\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"c.tsv:2: malformed quoting"):
        _recs(p)


def test_quoted_newlines_and_quotes_survive(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text('id,text\n"a\nb","x\r\ny ""z"""\nc,d\n', encoding="utf-8", newline="")
    assert [(r.id, r.text, r.line) for r in read_corpus(p)] == [("a\nb", 'x\r\ny "z"', 2), ("c", "d", 5)]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_txt_line_ends(tmp_path, end):
    p = tmp_path / "c.txt"
    p.write_bytes(end.join(["甲", "", "丙"]).encode() + end.encode())
    assert _recs(p) == [("1", "甲"), ("2", ""), ("3", "丙")]


def test_jsonl_ids(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": 7, "text": "a"}\n{"id": "x", "text": "b"}\n', encoding="utf-8")
    assert _recs(p) == [("7", "a"), ("x", "b")]
    for bad, msg in [('{"id": 1, "text": "a"}\n{"id": "1", "text": "b"}', r"c.jsonl:2: duplicate id '1' \(first on line 1\)"),
                     ('{"id": null, "text": "a"}', "id None is NoneType"), ('{"id": 1.0, "text": "a"}', "float"),
                     ('{"id": true, "text": "a"}', "bool"), ('{"id": "x", "text": "\\ud800"}', "lone surrogate"),
                     ('{"id": "\\udc00", "text": "a"}', "lone surrogate")]:
        p.write_text(bad + "\n", encoding="utf-8")
        with pytest.raises(InputError, match=msg):
            _recs(p)


# -- property-based: what a writer writes comes back, and garbage is only ever an InputError --------
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@FUZZ
@given(rows=st.lists(st.tuples(_text, _text), min_size=1, max_size=6, unique_by=lambda r: r[0]),
       delimiter=st.sampled_from([",", "\t"]))
def test_table_round_trip(tmp_path, rows, delimiter):
    buf = io.StringIO(newline="")
    w = csv.writer(buf, delimiter=delimiter)  # QUOTE_MINIMAL, CRLF: fields with CR or LF are quoted
    w.writerow(["id", "text"])
    w.writerows(rows)
    p = tmp_path / ("c.csv" if delimiter == "," else "c.tsv")
    p.write_bytes(buf.getvalue().encode("utf-8"))
    assert _recs(p) == rows


@FUZZ
@given(lines=st.lists(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=8),
                      min_size=1, max_size=8),
       ends=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=8, max_size=8))
def test_txt_round_trip(tmp_path, lines, ends):
    if lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    # CR, then an empty line ended by LF, is CRLF: one line end (the format's own ambiguity)
    assume(not any(e == "\r" and t == "" and e2.startswith("\n")
                   for e, t, e2 in zip(ends, lines[1:], ends[1:])))
    p = tmp_path / "c.txt"
    p.write_bytes("".join(t + e for t, e in zip(lines, ends)).encode("utf-8"))
    assert [t for _, t in _recs(p)] == lines


@FUZZ
@given(data=st.binary(max_size=200), fmt=st.sampled_from(["txt", "jsonl", "tsv", "csv"]))
def test_corpus_garbage_bytes(tmp_path, data, fmt):
    p = tmp_path / f"c.{fmt}"
    p.write_bytes(data)
    try:
        recs = list(read_corpus(p))
    except InputError:
        return
    assert all(isinstance(r.id, str) and isinstance(r.text, str) for r in recs)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(["id", "text", "x"]), kids, max_size=3),
                     max_leaves=6)


@FUZZ
@given(objs=st.lists(_json, min_size=1, max_size=5))
def test_jsonl_any_values(tmp_path, objs):
    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    try:
        recs = list(read_corpus(p))
    except InputError:
        return
    assert len(recs) == len(objs) and len({r.id for r in recs}) == len(recs)
    for r, o in zip(recs, objs):
        assert r.text == o["text"] and (r.id == o["id"] if isinstance(o.get("id"), str) else True)


# -- artifact loaders on damaged bytes ---------------------------------------------------------
@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz-artifacts")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 8)).astype(np.float32)
    ids = [f"d{i}" for i in range(40)]
    meta = [{"i": i} for i in range(40)]
    texts = [f"t{i}" for i in range(40)]
    VectorIndex(preset="flat", transform=Chain([Whitening(6), Normalize()]).fit(X)).add(X, ids, texts, meta).save(d / "flat")
    LSHIndex(nbits=16, mode="ivf", nlist=2).add(X, ids, texts, meta).save(d / "lsh")
    save_transform(Chain([Whitening(4), Normalize()]).fit(X), d / "w")
    with atomic_dir(d / "emb", kind="simkit-embeddings") as tmp:
        EmbeddingStore.write(tmp, X, ids, {"model": "x"})
    return d, X


def _files(root: Path) -> list[str]:
    v = resolve_version(root)
    return sorted(str(f.relative_to(v)) for f in v.rglob("*") if f.is_file())


def _use(kind: str, path: Path, X: np.ndarray) -> None:
    if kind in ("flat", "lsh"):
        idx = load_index(path)
        idx.search(X[:3], top_k=5)
        idx.get("d1")
    elif kind == "w":
        load_transform(path).transform(X)
    else:
        s = EmbeddingStore.load(path)
        np.asarray(s.embeddings).sum()


@FUZZ
@given(kind=st.sampled_from(["flat", "lsh", "w", "emb"]), pick=st.integers(0, 99),
       how=st.sampled_from(["truncate", "flip", "garbage", "delete"]), pos=st.floats(0, 1), byte=st.integers(0, 255))
def test_damaged_artifacts_raise_only_simkit_errors(tmp_path, artifacts, kind, pick, how, pos, byte):
    src, X = artifacts
    path = tmp_path / kind
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(src / kind, path)
    files = _files(path)
    name = files[pick % len(files)]
    if name == "index.faiss" and how in ("flip", "garbage"):
        how = "truncate"  # FAISS's reader trusts its header (sizes): only truncation is in scope
    f = resolve_version(path) / name
    raw = f.read_bytes()
    at = int(pos * len(raw))
    if how == "truncate":
        f.write_bytes(raw[:at])
    elif how == "flip" and raw:
        f.write_bytes(raw[:at] + bytes([raw[min(at, len(raw) - 1)] ^ (byte or 1)]) + raw[at + 1:])
    elif how == "garbage":
        f.write_bytes(bytes([byte]) * (at % 64))
    else:
        f.unlink()
    try:
        _use(kind, path, X)
    except SimkitError:
        pass
