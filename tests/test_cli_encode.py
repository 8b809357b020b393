"""`simkit encode` and `simkit info` through typer's CliRunner."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from simkit_cli.app import app
from typer.testing import CliRunner

from simkit.encoder import Encoder
from simkit.store import EmbeddingStore

runner = CliRunner()


@pytest.fixture
def corpus(tmp_path, texts):
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(texts[:5]) + "\n\n" + texts[5] + "\n", encoding="utf-8")
    return p


def test_encode_writes_store(tmp_path, corpus, tiny_bert_dir, texts):
    out = tmp_path / "emb"
    res = runner.invoke(app, ["-q", "encode", str(corpus), "-m", str(tiny_bert_dir), "-o", str(out), "-b", "2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["count"] == 7 and summary["dim"] == 32 and summary["empty"] == 1
    store = EmbeddingStore.load(out)
    assert store.ids == ["1", "2", "3", "4", "5", "6", "7"]
    assert store.manifest["pooling"] == "pooler" and store.manifest["count"] == 7
    ref = Encoder(tiny_bert_dir).encode(texts[:5] + ["", texts[5]])
    np.testing.assert_allclose(store.embeddings, ref, atol=1e-5)


def test_encode_refuses_to_overwrite(tmp_path, corpus, tiny_bert_dir):
    out = tmp_path / "emb"
    args = ["-q", "encode", str(corpus), "-m", str(tiny_bert_dir), "-o", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "already exists; pass --overwrite" in res.stderr
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_crash_leaves_no_output(tmp_path, corpus, tiny_bert_dir, monkeypatch):
    calls = []

    def boom(self, *a, **k):
        calls.append(1)
        raise RuntimeError("simulated crash in the middle of encoding")

    monkeypatch.setattr(Encoder, "encode", boom)
    out = tmp_path / "emb"
    res = runner.invoke(app, ["-q", "encode", str(corpus), "-m", str(tiny_bert_dir), "-o", str(out)])
    assert res.exit_code != 0 and calls
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != ".emb.lock"] == ["corpus.txt"]  # no temp dir left behind


def test_encode_jsonl_and_truncation_summary(tmp_path, tiny_bert_dir):
    p = tmp_path / "c.jsonl"
    p.write_text('{"qid": "a", "q": "花呗怎么还款花呗怎么还款"}\n{"qid": "b", "q": "借呗"}\n', encoding="utf-8")
    out = tmp_path / "emb"
    res = runner.invoke(app, ["-q", "encode", str(p), "-m", str(tiny_bert_dir), "-o", str(out),
                              "--text-field", "q", "--id-field", "qid", "--max-seq-length", "6"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["truncated"] == 1
    assert EmbeddingStore.load(out).ids == ["a", "b"]


def test_warnings_are_one_line_without_source(tmp_path, tiny_bert_dir):
    # Python's default format printed the warning's file:line and the source line under it.
    import subprocess
    import sys

    (tmp_path / "D" / "ATEC").mkdir(parents=True)
    (tmp_path / "D" / "ATEC" / "ATEC.valid.data").write_text(  # constant labels: no correlation
        "花呗怎么还款\t怎么还花呗\t1\n借呗能提前还吗\t借呗可以提前还款吗\t1\n明天下雨吗\t今天天气好\t1\n",
        encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "simkit_cli.app", "-q", "eval", "sts", "-d", str(tmp_path / "D"),
                          "-m", str(tiny_bert_dir), "--tasks", "ATEC", "--split", "valid", "-p", "cls", "-w", "0",
                          "--no-cache", "-o", str(tmp_path / "res")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines and all(line.startswith("simkit: warning: ") for line in lines), res.stderr
    assert "one side is constant" in lines[0] and ".py" not in res.stderr


@pytest.mark.parametrize(
    "content, args, message",
    [
        (b"ok\n\xff\n", [], "corpus.txt:2: invalid UTF-8"),
        (b"", [], "empty input"),
    ],
)
def test_encode_bad_input(tmp_path, tiny_bert_dir, content, args, message):
    p = tmp_path / "corpus.txt"
    p.write_bytes(content)
    res = runner.invoke(app, ["-q", "encode", str(p), "-m", str(tiny_bert_dir), "-o", str(tmp_path / "o"), *args])
    assert res.exit_code == 1 and message in res.stderr
    assert not (tmp_path / "o").exists()


def test_encode_unknown_pooling_and_missing_weights(tmp_path, corpus, tiny_bert_dir):
    res = runner.invoke(app, ["encode", str(corpus), "-m", str(tiny_bert_dir), "-p", "max", "-o", str(tmp_path / "o")])
    # a bad option value is a usage error: exit 2 (issue 17), the valid values listed
    assert res.exit_code == 2 and "expected one of: cls, pooler, last-avg, first-last-avg, mean" in res.stderr
    empty = tmp_path / "empty-model"
    empty.mkdir()
    res = runner.invoke(app, ["encode", str(corpus), "-m", str(empty), "-o", str(tmp_path / "o")])
    assert res.exit_code == 1 and str(empty) in res.stderr


def test_info(tiny_roformer_dir):
    res = runner.invoke(app, ["info", str(tiny_roformer_dir)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["backbone"] == "roformer" and info["can_generate"] and info["pooler_activation"] == "linear"


def test_help_teaches():
    res = runner.invoke(app, ["encode", "--help"])
    assert res.exit_code == 0 and "Example:" in res.stdout and "--overwrite" in res.stdout


def test_encode_streams_write_the_same_store(tmp_path, corpus, tiny_bert_dir, monkeypatch):
    """--streams 2 runs batches on two threads and stores the vectors one stream gives."""
    import threading

    names = []
    real = Encoder._hidden_states

    def spy(self, *a, **kw):
        names.append(threading.current_thread().name)
        return real(self, *a, **kw)

    monkeypatch.setattr(Encoder, "_hidden_states", spy)
    base = ["-q", "encode", str(corpus), "-m", str(tiny_bert_dir), "-b", "2", "--threads", "2"]
    assert runner.invoke(app, [*base, "-o", str(tmp_path / "one")]).exit_code == 0
    assert names and not any(n.startswith("simkit-stream") for n in names)
    names.clear()
    res = runner.invoke(app, [*base, "--streams", "2", "-o", str(tmp_path / "two")])
    assert res.exit_code == 0, res.output
    assert names and all(n.startswith("simkit-stream") for n in names)
    np.testing.assert_array_equal(EmbeddingStore.load(tmp_path / "two").embeddings,
                                  EmbeddingStore.load(tmp_path / "one").embeddings)
    res = runner.invoke(app, [*base, "--streams", "0", "-o", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "--streams" in res.stderr

    res = runner.invoke(app, [*base, "--streams", "2", "--engine", "ray", "-o", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--streams is for --engine local" in res.stderr
    assert not (tmp_path / "r").exists()
