"""``simkit index build / query / add / info`` through typer's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from simkit_cli.app import app
from typer.testing import CliRunner

from simkit.fsutil import resolve_version


@pytest.fixture
def runner():
    return CliRunner()


def run(runner, *args, ok=True):
    res = runner.invoke(app, ["-q", *map(str, args)])
    if ok:
        assert res.exit_code == 0, res.output + str(res.exception)
    return res


def jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_build_query_add_info_from_corpus(tmp_path, runner, tiny_bert_dir, texts):
    corpus = tmp_path / "faq.txt"
    corpus.write_text("\n".join(texts[:15]) + "\n", encoding="utf-8")
    idx = tmp_path / "idx"
    out = json.loads(run(runner, "index", "build", corpus, "--model", tiny_bert_dir, "-o", idx).stdout)
    assert out["count"] == 15 and out["factory"] == "Flat"
    # one query text -> one JSON line; the best hit is the text itself (id = line number)
    (line,) = jsonl(run(runner, "index", "query", idx, texts[2], "-k", "3").stdout)
    assert line["query"] == texts[2] and len(line["results"]) == 3
    assert line["results"][0]["id"] == "3" and line["results"][0]["text"] == texts[2]
    # --queries FILE -> one line per query
    qfile = tmp_path / "q.txt"
    qfile.write_text(f"{texts[0]}\n{texts[5]}\n", encoding="utf-8")
    lines = jsonl(run(runner, "index", "query", idx, "--queries", qfile, "-k", "2").stdout)
    assert [ln["results"][0]["id"] for ln in lines] == ["1", "6"] and [ln["query_id"] for ln in lines] == ["1", "2"]
    # add a second corpus (ids must not clash: jsonl with explicit ids), encoded with the stored model
    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps({"id": f"m{i}", "text": t}, ensure_ascii=False) + "\n"
                            for i, t in enumerate(texts[15:])), encoding="utf-8")
    added = json.loads(run(runner, "index", "add", idx, more).stdout)
    assert added["count"] == len(texts) and added["count_before"] == 15
    (line,) = jsonl(run(runner, "index", "query", idx, texts[16], "-k", "1").stdout)
    assert line["results"][0]["id"] == "m1"
    # adding the same ids again is refused, and the index is unchanged
    res = run(runner, "index", "add", idx, more, ok=False)
    assert res.exit_code == 1 and "already in the index" in res.stderr and "index add --upsert" in res.stderr
    info = json.loads(run(runner, "index", "info", idx).stdout)
    assert info["count"] == len(texts) and info["format"] == "simkit-index" and "index.faiss" in info["files"]
    assert info["model"]["model"] == str(tiny_bert_dir.resolve())


def test_build_from_embedding_dir_with_transform_and_vectors(tmp_path, runner, tiny_bert_dir, texts):
    from simkit.encoder import Encoder
    from simkit.transforms import Chain, Whitening, save_transform

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    emb = tmp_path / "emb"
    run(runner, "encode", corpus, "--model", tiny_bert_dir, "-o", emb)
    vecs = Encoder(tiny_bert_dir).encode(texts)
    save_transform(Chain([Whitening(n_components=8)]).fit(vecs), tmp_path / "w")
    idx = tmp_path / "idx"
    out = json.loads(run(runner, "index", "build", emb, "--preset", "hnsw", "--transform", tmp_path / "w",
                         "--texts", corpus, "-o", idx).stdout)
    assert (out["dim"], out["dim_in"], out["factory"]) == (8, 32, "HNSW32")
    (line,) = jsonl(run(runner, "index", "query", idx, texts[7], "-k", "2", "--ef-search", "64").stdout)
    assert line["results"][0]["id"] == "8" and line["results"][0]["text"] == texts[7]
    np.save(tmp_path / "q.npy", vecs[[3, 9]])
    lines = jsonl(run(runner, "index", "query", idx, "--vectors", tmp_path / "q.npy", "-k", "1").stdout)
    assert [ln["results"][0]["id"] for ln in lines] == ["4", "10"]
    # errors: wrong dimension, existing output, both preset and factory, nprobe on HNSW
    np.save(tmp_path / "bad.npy", np.zeros((1, 5), np.float32))
    res = run(runner, "index", "query", idx, "--vectors", tmp_path / "bad.npy", ok=False)
    assert res.exit_code == 1 and "dimension 5, but this index expects dimension 32" in res.stderr
    res = run(runner, "index", "build", emb, "-o", idx, ok=False)
    assert res.exit_code == 1 and "already exists" in res.stderr
    res = run(runner, "index", "query", idx, "x", "--nprobe", "4", ok=False)
    assert res.exit_code == 1 and "nprobe applies to IVF" in res.stderr


def test_build_lsh_and_bad_index_dir(tmp_path, runner, tiny_bert_dir, texts):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    idx = tmp_path / "lsh"
    run(runner, "index", "build", corpus, "--model", tiny_bert_dir, "--preset", "lsh", "--nbits", "64", "-o", idx)
    (line,) = jsonl(run(runner, "index", "query", idx, texts[0], "-k", "1").stdout)
    assert line["results"][0]["id"] == "1"
    ivf = tmp_path / "lsh-ivf"
    out = json.loads(run(runner, "index", "build", corpus, "--model", tiny_bert_dir, "--preset", "lsh", "--nbits", "64",
                         "--lsh-mode", "ivf", "-o", ivf).stdout)
    assert out["factory"] == "SimHash64+ivf"
    (line,) = jsonl(run(runner, "index", "query", ivf, texts[0], "-k", "1", "--nprobe", "1").stdout)
    assert line["results"][0]["id"] == "1"
    res = run(runner, "index", "build", corpus, "--model", tiny_bert_dir, "--preset", "lsh", "--lsh-mode", "trees",
              "-o", tmp_path / "bad", ok=False)
    assert res.exit_code == 2 and "'trees'" in res.stderr and "ivf" in res.stderr  # a usage error (issue 17)
    res = run(runner, "index", "build", corpus, "--model", tiny_bert_dir, "--preset", "ivf", "--lsh-mode", "ivf",
              "-o", tmp_path / "bad", ok=False)
    assert res.exit_code == 1 and "--lsh-mode 'ivf' applies to --preset lsh" in res.stderr
    cfg = json.loads((resolve_version(idx) / "config.json").read_text())
    (resolve_version(idx) / "config.json").write_text(json.dumps({**cfg, "format_version": 2}))
    res = run(runner, "index", "query", idx, "x", ok=False)
    assert res.exit_code == 1 and "format_version 2 is not supported" in res.stderr and str(idx) in res.stderr
