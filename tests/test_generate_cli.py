"""CLI: simkit paraphrase (JSONL) and simkit convert bert4keras."""

from __future__ import annotations

import json
from pathlib import Path

from simkit_cli.app import app
from typer.testing import CliRunner

FIX = Path(__file__).parent / "fixtures"


def _run(*args):
    return CliRunner().invoke(app, ["-q", *map(str, args)])


def test_paraphrase_text_and_file(tiny_bert_dir, tmp_path):
    r = _run("paraphrase", "花呗怎么还款", "-n", 8, "-k", 3, "--model", tiny_bert_dir, "--seed", 1,
             "--max-new-tokens", 6)
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout.strip())
    assert rec["source"] == "花呗怎么还款" and 1 <= len(rec["candidates"]) <= 3
    assert {"text", "score", "cosine", "loglik"} == set(rec["candidates"][0])
    again = _run("paraphrase", "花呗怎么还款", "-n", 8, "-k", 3, "--model", tiny_bert_dir,
                 "--seed", 1, "--max-new-tokens", 6)
    assert again.stdout == r.stdout
    f = tmp_path / "in.txt"
    f.write_text("花呗怎么还款\n明天会下雨吗\n", encoding="utf-8")
    r = _run("paraphrase", "--input", f, "-n", 4, "--model", tiny_bert_dir, "--seed", 0,
             "--max-new-tokens", 5)
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert [x["source"] for x in lines] == ["花呗怎么还款", "明天会下雨吗"]


def test_paraphrase_bad_input(tiny_bert_dir):
    r = _run("paraphrase", "", "--model", tiny_bert_dir)
    assert r.exit_code == 1 and "empty" in r.stderr
    r = _run("paraphrase", "花呗", "-n", 0, "--model", tiny_bert_dir)
    assert r.exit_code == 2 and r.stderr == "simkit: usage error: --num-samples 0: expected an integer >= 1 " \
                                            "(candidates to sample)\n"
    r = _run("paraphrase", "--model", tiny_bert_dir)
    assert r.exit_code == 2 and "either TEXT or --input" in r.stderr  # a usage error (issue 17)
    r = _run("paraphrase", "花呗", "--no-repeat-ngram-size", -2, "--model", tiny_bert_dir)
    assert r.exit_code == 2 and "usage error: --no-repeat-ngram-size -2: expected an integer >= 0" in r.stderr
    r = _run("paraphrase", "花呗", "--top-p", 2, "--model", tiny_bert_dir)
    assert r.exit_code == 2 and "usage error: --top-p 2.0: expected a number in (0, 1]" in r.stderr


def test_paraphrase_no_repeat_ngram_size(tiny_bert_dir):
    from simkit.generate import Paraphraser

    args = ("paraphrase", "花呗怎么还款", "-n", 16, "--model", tiny_bert_dir, "--seed", 0, "--max-new-tokens", 20)
    r = _run(*args, "--no-repeat-ngram-size", 1)
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["candidates"]
    assert got != json.loads(_run(*args).stdout)["candidates"]
    want = Paraphraser(str(tiny_bert_dir)).similar("花呗怎么还款", n=16, top_k=16, seed=0, max_new_tokens=20,
                                                   no_repeat_ngram_size=1)
    assert [c["text"] for c in got] == [c["text"] for c in want]


def test_convert_bert4keras_cli(tmp_path):
    out = tmp_path / "m"
    r = _run("convert", "bert4keras", FIX / "tf_roformer_b4k", "-o", out)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["backbone"] == "roformer" and info["naming"] == "bert4keras"
    assert info["keep_tokens"] == info["vocab_size"] == 33
    assert (out / "model.safetensors").is_file()
    r = _run("convert", "bert4keras", FIX / "tf_roformer_b4k", "-o", out)
    assert r.exit_code == 1 and "already exists" in r.stderr
    r = _run("convert", "bert4keras", tmp_path / "missing", "-o", tmp_path / "x")
    assert r.exit_code == 1 and "missing" in r.stderr
