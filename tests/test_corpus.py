"""Corpus readers: formats, the empty-line policy and clear errors with line numbers."""

from __future__ import annotations

import pytest

from simkit.corpus import CorpusStats, read_corpus
from simkit.errors import InputError


def _read(path, **kw):
    stats = CorpusStats()
    return list(read_corpus(path, stats=stats, **kw)), stats


def test_txt_keeps_empty_lines_so_ids_never_shift(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("第一行\n\n第三行\n", encoding="utf-8")
    recs, stats = _read(p)
    assert [(r.id, r.text) for r in recs] == [("1", "第一行"), ("2", ""), ("3", "第三行")]
    assert stats.empty == 1 and stats.records == 3


def test_jsonl_fields_and_blank_lines(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"id": "q1", "q": "花呗"}\n\n{"q": "借呗"}\n', encoding="utf-8")
    recs, stats = _read(p, text_field="q")
    assert [(r.id, r.text) for r in recs] == [("q1", "花呗"), ("3", "借呗")]
    assert stats.blank == 1
    with pytest.raises(InputError, match=r"c.jsonl:1: no field 'text'"):
        _read(p)


def test_csv_and_tsv_columns(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text('id,question\na,"你好,世界"\nb,再见\n', encoding="utf-8")
    recs, _ = _read(p, text_field="question")
    assert [(r.id, r.text) for r in recs] == [("a", "你好,世界"), ("b", "再见")]
    t = tmp_path / "c.tsv"
    t.write_text("text\tother\n你好\tx\n", encoding="utf-8")
    assert _read(t)[0][0].text == "你好"
    with pytest.raises(InputError, match=r"c.csv:1: no column 'text'; columns are \['id', 'question'\]"):
        _read(p)


def test_invalid_utf8_names_the_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes("好\n".encode() + b"\xff\xfe\n")
    with pytest.raises(InputError, match=r"bad.txt:2: invalid UTF-8"):
        _read(p)


def test_empty_and_missing_files(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("")
    with pytest.raises(InputError, match="empty input"):
        _read(p)
    with pytest.raises(InputError, match="no such file"):
        _read(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="cannot tell the format"):
        _read(tmp_path.joinpath("x.parquet").with_suffix(".parquet") if False else _touch(tmp_path / "x.dat"))


def _touch(p):
    p.write_text("x\n")
    return p


def test_a_directory_where_a_file_is_expected_says_so(tmp_path):
    from simkit.index.query import load_query_vectors
    from simkit.pairs import read_pair_lines
    from simkit.store import read_ids

    for read in (_read, read_pair_lines, load_query_vectors, read_ids):
        with pytest.raises(InputError, match=f"^{tmp_path}: is a directory; expected a file$"):
            read(tmp_path)
        with pytest.raises(InputError, match="nope.txt: no such file$"):
            read(tmp_path / "nope.txt")
