"""``simkit eval carve``: select / report parts of valid splits, carved by sentence."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from simkit_cli.app import app
from simkit_eval.carve import sentence_key, split_pairs
from typer.testing import CliRunner


def _rows(pairs):
    return [(a, b, str(y)) for a, b, y in pairs]


def _sentences(rows):
    return {sentence_key(s) for a, b, _ in rows for s in (a, b)}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdefghij"), st.sampled_from("abcdefghij"), st.integers(0, 1)),
                max_size=40),
       st.sets(st.sampled_from("abcdefghij"), max_size=4), st.integers(0, 3))
def test_no_sentence_in_both_parts_and_no_seen_sentence_kept(pairs, seen, seed):
    rows = _rows(pairs)
    parts, counts = split_pairs(rows, set(seen), seed=seed)
    assert not _sentences(parts["select"]) & _sentences(parts["report"])
    assert not (_sentences(parts["select"]) | _sentences(parts["report"])) & set(seen)
    assert counts["select"] + counts["report"] + counts["dropped_seen"] == len(rows) == counts["lines"]
    kept = parts["select"] + parts["report"]
    assert sorted(kept) == sorted(r for r in rows if r[0] not in seen and r[1] not in seen)


def test_shared_sentences_stay_together_and_whitespace_does_not_hide_a_seen_one():
    rows = _rows([("花呗 怎么还", "花呗怎么还款", 1), ("花呗怎么还款", "借呗额度", 0), ("借呗额度", "另一个", 1),
                  ("今天天气", "明天天气", 1), ("见过 的句子", "新句子", 1)])
    parts, counts = split_pairs(rows, {"见过的句子"})
    assert counts["dropped_seen"] == 1 and counts["components"] == 3
    chain = {r for r in rows[:3]}
    assert chain <= set(parts["select"]) or chain <= set(parts["report"])  # one component, one part
    assert split_pairs(rows, set(), seed=0) == split_pairs(rows, set(), seed=0)  # deterministic


def test_cli_writes_parts_that_eval_sts_reads(tmp_path):
    from test_eval_data import make_senteval_dir

    data = make_senteval_dir(tmp_path / "sts")
    first = (data / "BQ" / "BQ.valid.data").read_text(encoding="utf-8").splitlines()[0]
    seen = tmp_path / "train.tsv"
    seen.write_text(first + "\n", encoding="utf-8")
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "carve", "-d", str(data), "-o", str(tmp_path / "parts"), str(seen)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    bq = summary["tasks"]["BQ"]
    assert bq["dropped_seen"] >= 1 and bq["select"] + bq["report"] + bq["dropped_seen"] == bq["lines"]
    assert json.loads((tmp_path / "parts" / "config.json").read_text())["tasks"]["BQ"] == bq
    report = (tmp_path / "parts" / "BQ" / "BQ.report.data").read_text(encoding="utf-8").splitlines()
    assert len(report) == bq["report"] and first not in report
    r = runner.invoke(app, ["eval", "sts", "--model", "tfidf", "-d", str(tmp_path / "parts"), "--split", "select",
                            "--tasks", "BQ,ATEC", "-o", str(tmp_path / "res"), "--no-cache", "--no-plot"])
    assert r.exit_code == 0, r.output
    # Bad input: one line, exit 1; usage: exit 2; an existing output is refused.
    r = runner.invoke(app, ["eval", "carve", "-d", str(tmp_path / "nowhere"), "-o", str(tmp_path / "p2"), str(seen)])
    assert r.exit_code == 1 and "not found" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["eval", "carve", "-d", str(data), "-o", str(tmp_path / "p3")])
    assert r.exit_code == 2
    r = runner.invoke(app, ["eval", "carve", "-d", str(data), "-o", str(tmp_path / "parts"), str(seen)])
    assert r.exit_code == 1 and "parts" in r.output
