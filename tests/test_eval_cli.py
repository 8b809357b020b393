"""``simkit eval sts`` through typer's CliRunner, and the sentence-transformers cross-check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from simkit_cli.app import app
from test_eval_data import make_senteval_dir
from typer.testing import CliRunner

TASKS = ("ATEC", "BQ", "LCQMC", "PAWSX", "STS-B")


@pytest.fixture
def data_dir(tmp_path):
    return make_senteval_dir(tmp_path / "sts")


def _run(*args):
    return CliRunner().invoke(app, ["eval", "sts", *map(str, args)])


def test_tfidf_needs_no_weights_and_prints_the_table(data_dir, tmp_path):
    out = tmp_path / "res"
    r = _run("--model", "tfidf", "-d", data_dir, "-o", out, "--no-cache")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "| model-pooling | ATEC | BQ | LCQMC | PAWSX | STS-B | avg | w-avg |" in lines
    row = next(ln for ln in lines if ln.startswith("| tfidf |"))
    cells = [json.loads(ln) for ln in (out / "cells.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [c["task"] for c in cells] == list(TASKS)
    assert row.split(" | ")[1] == f"{100 * cells[0]['scores']['main_score']:.2f}"
    assert (out / "table.md").read_text(encoding="utf-8") in r.stdout
    r2 = _run("--baseline", "tfidf", "-d", data_dir, "-o", out, "--no-cache", "--split", "test",
              "--tasks", "BQ,STS-B", "--overwrite")
    assert r2.exit_code == 0, r2.output and "on the test split" in r2.stdout
    r3 = _run("--model", "tfidf", "-d", data_dir, "-o", tmp_path / "ci", "--no-cache", "--bootstrap", 100)
    assert r3.exit_code == 0, r3.output
    row = next(ln for ln in r3.stdout.splitlines() if ln.startswith("| tfidf |")).split(" | ")
    low, high = (float(x) for x in row[-1].rstrip(" |").split("–"))
    assert low < float(row[6]) < high  # the interval of the average brackets it
    assert _run("--model", "tfidf", "-d", data_dir, "-o", tmp_path / "bad", "--bootstrap", -1).exit_code == 2


def test_model_grid_with_cache(tiny_bert_dir, data_dir, tmp_path):
    args = ["--model", tiny_bert_dir, "--baseline", "tfidf", "-d", data_dir, "--tasks", "STS-B,PAWSX",
            "--pooling", "cls,first-last-avg", "--whitening", "0,full,8", "--jl", "4",
            "--cache-dir", tmp_path / "cache", "--no-plot", "--max-seq-length", "PAWSX=48"]
    r = _run(*args, "-o", tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert "cells: none / whitening / whitening-8 / jl-4" in r.stdout
    label = f"{tiny_bert_dir}-first-last-avg"
    assert sum(ln.startswith(("| " + label, "| tfidf |")) for ln in r.stdout.splitlines()) == 2
    m1 = json.loads((tmp_path / "a" / "manifest.json").read_text(encoding="utf-8"))
    assert m1["max_seq_length"] == {"STS-B": 64, "PAWSX": 48} and m1["cache"]["encoded"] > 0
    assert m1["transforms"] == ["none", "whitening", "whitening-8", "jl-4"]
    r = _run(*args, "-o", tmp_path / "b")
    m2 = json.loads((tmp_path / "b" / "manifest.json").read_text(encoding="utf-8"))
    assert r.exit_code == 0 and m2["cache"]["encoded"] == 0 and m2["cache"]["hits"] > 0
    assert m1["summary"] == m2["summary"]


@pytest.mark.parametrize("args, message", [
    (["--model", "tfidf", "--tasks", "XX"], "no XX/XX.*.data files, and 'XX' is not a C-MTEB task (those are: ATEC, BQ, LCQMC, PAWSX, STS-B)"),
    (["--tasks", "BQ", "-p", "cls", "-w", "0"], "SIMKIT_MODEL-is-missing: no such model directory"),  # the default
    (["--model", "tfidf", "--fit-on", "nope"], "--fit-on 'nope'"),
    (["--baseline", "bm25"], "unknown baseline 'bm25'"),
    (["--model", "tfidf", "--whitening", "0,x"], "--whitening (0, full or k): 'x' is not an integer"),
    (["--model", "tfidf", "--split", "train"], "ATEC.train.data: no such file; found for ATEC: ATEC.valid.data"),
])
def test_errors_are_one_line_and_exit_1(data_dir, tmp_path, args, message, monkeypatch):
    monkeypatch.setenv("SIMKIT_MODEL", "./SIMKIT_MODEL-is-missing")  # no --model: eval sts uses $SIMKIT_MODEL
    r = _run(*args, "-d", data_dir, "-o", tmp_path / "o", "--no-cache")
    assert r.exit_code == 1 and message in r.stderr and r.stderr.startswith("simkit: error: ")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--tasks", ",,"], "--tasks ',,' names nothing"),  # ran nothing and exited 0
    (["--split", " "], "--split ' ' names nothing"),
    (["--bootstrap", "1"], "--bootstrap 1: expected 0 (off) or at least 20"),  # a one-resample 'interval'
])
def test_option_values_that_select_nothing_are_usage_errors(data_dir, tmp_path, args, message):
    r = _run("--model", "tfidf", *args, "-d", data_dir, "-o", tmp_path / "o", "--no-cache")
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"simkit: usage error: {message}"), r.stderr
    assert not (tmp_path / "o").exists()


def test_refuses_to_overwrite(data_dir, tmp_path):
    (tmp_path / "o").mkdir()
    r = _run("--model", "tfidf", "-d", data_dir, "-o", tmp_path / "o")
    assert r.exit_code == 1 and "pass --overwrite" in r.stderr


def test_sentence_transformers_evaluator_agrees(tiny_bert_dir, data_dir):
    """sentence-transformers' EmbeddingSimilarityEvaluator on the same model and pairs."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
    from simkit_eval.data import load_task
    from simkit_eval.grid import GridConfig, ModelSpec, parse_transforms, run_grid

    from simkit.encoder import Encoder

    class Adapter:
        """The bits of a SentenceTransformer the evaluator touches, over a simkit Encoder."""

        similarity_fn_name = "cosine"

        class model_card_data:
            @staticmethod
            def set_evaluation_metrics(*args, **kwargs):
                pass

        def __init__(self, enc):
            self.enc = enc

        def encode(self, sentences, batch_size=32, show_progress_bar=None, convert_to_numpy=True, **kw):
            return self.enc.encode(list(sentences), batch_size=batch_size, max_seq_length=64)

    pooling = "first-last-avg"
    enc = Encoder(tiny_bert_dir, pooling=pooling)
    run = run_grid([ModelSpec("tiny", enc)], data_dir,
                   GridConfig(tasks=["STS-B", "ATEC"], poolings=[pooling], transforms=parse_transforms("0")))
    for cell in run.cells:
        ds = load_task(data_dir, cell.task, "valid")
        ev = EmbeddingSimilarityEvaluator(ds.sentences1, ds.sentences2, ds.labels.tolist(),
                                          similarity_fn_names=["cosine"], name="sts")
        metrics = ev(Adapter(enc))
        assert cell.scores["cosine_spearman"] == pytest.approx(metrics["sts_spearman_cosine"], abs=1e-6)
        assert cell.scores["cosine_pearson"] == pytest.approx(metrics["sts_pearson_cosine"], abs=1e-6)


def test_retrieval_scores_a_tiny_task(tmp_path, tiny_bert_dir):
    """R@1 / MRR are computed on known rankings: TF-IDF finds exact-overlap partners first."""
    from simkit_eval.data import read_pairs_tsv
    from simkit_eval.retrieval import retrieval_queries, retrieval_scores

    d = tmp_path / "T"
    d.mkdir()
    rows = ["花呗怎么还款\t花呗怎么还钱\t1", "借呗能提前还吗\t借呗提前还款\t1", "明天会下雨吗\t明天下雨吗\t1",
            "花呗怎么还款\t明天会下雨吗\t0", "今天天气不错\t今天天气不错\t1"]
    (d / "T.valid.data").write_text("\n".join(rows) + "\n", encoding="utf-8")
    q = retrieval_queries(read_pairs_tsv(d / "T.valid.data", task="T", split="valid"))
    assert len(q.queries) == 3  # the identical pair has no other partner: skipped
    tf = retrieval_scores("tfidf", q)
    assert tf["n"] == 3 and tf["R@10"] == 100.0 and 0 < tf["MRR"] <= 100
    res = CliRunner().invoke(app, ["eval", "retrieval", "-m", str(tiny_bert_dir), "-d", str(tmp_path),
                                   "--tasks", "T", "--baseline", "tfidf"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["results"]
    assert [r["model"] for r in rows] == [str(tiny_bert_dir), "tfidf"]
    assert rows[1]["MRR"] == pytest.approx(tf["MRR"]) and rows[0]["n"] == 3
    ci = retrieval_scores("tfidf", q, bootstrap=200)["MRR_ci"]
    assert ci == [100.0, 100.0]  # every query answered first: no spread to resample
    from simkit_eval.retrieval import mean_interval

    rr = np.array([1.0, 0.5, 0.25, 1.0, 0.0, 1 / 3] * 20)
    lo, hi = mean_interval(rr, 500)
    assert lo < rr.mean() < hi and hi - lo < 0.3 and mean_interval(rr, 500) == [lo, hi]
    res = CliRunner().invoke(app, ["eval", "retrieval", "-m", "tfidf", "-d", str(tmp_path), "--tasks", "T",
                                   "--bootstrap", "50"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)["results"][0]["MRR_ci"]) == 2


def test_a_whitening_wider_than_every_model_is_a_usage_error(tiny_bert_dir, data_dir, tmp_path):
    r = _run("--model", tiny_bert_dir, "-d", data_dir, "-w", "0,999", "--no-cache", "-o", tmp_path / "o")
    assert r.exit_code == 2 and r.stderr.endswith(
        "simkit: usage error: --whitening 999: expected at most 32 dimensions (the widest model has 32)\n"), r.stderr
    assert not (tmp_path / "o").exists()


def test_many_notes_show_the_first_five_and_point_to_the_manifest(tiny_bert_dir, data_dir, tmp_path):
    # 10-pair tasks give 20 sentences for a 32-d whitening: each (pooling, task) cell notes a
    # rank-deficient covariance; stderr must not list every one of them.
    r = _run("--model", tiny_bert_dir, "-d", data_dir, "-w", "full", "--no-cache", "--no-plot", "-o", tmp_path / "o")
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text(encoding="utf-8"))
    notes = [ln for ln in r.stderr.splitlines() if ln.startswith("note: ")]
    assert len(manifest["notes"]) > 6 and notes[:5] == [f"note: {n}" for n in manifest["notes"][:5]]
    assert notes[5:] == [f"note: {len(manifest['notes']) - 5} more notes in {tmp_path / 'o' / 'manifest.json'}"]
