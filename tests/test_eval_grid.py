"""simkit_eval: scoring vs scipy, the grid vs the published whitening code, cache, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
from simkit_eval.baseline import TfidfEncoder
from simkit_eval.cache import EmbeddingCache
from simkit_eval.data import load_task, unique_texts
from simkit_eval.grid import GridConfig, ModelSpec, parse_max_seq_length, parse_transforms, run_grid
from simkit_eval.report import markdown_table, task_result, write_report
from simkit_eval.scoring import averages, bootstrap_spearman, pearson, spearman, sts_scores
from test_eval_data import PAIRS_05, make_senteval_dir, write_task

from simkit.encoder import Encoder
from simkit.errors import InputError

POOLINGS = ["cls", "pooler", "last-avg", "first-last-avg"]


@pytest.fixture(scope="module")
def enc(tiny_bert_dir):
    return Encoder(tiny_bert_dir)


@pytest.fixture
def data_dir(tmp_path):
    return make_senteval_dir(tmp_path / "sts")


# --------------------------------------------------------------------------- scoring
def _manual_spearman(x, y):
    """Average ranks for ties, then Pearson of the ranks (written out, no scipy)."""
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        sv = v[order]
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and sv[j + 1] == sv[i]:
                j += 1
            r[order[i : j + 1]] = (i + j) / 2 + 1
            i = j + 1
        return r
    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / np.sqrt((rx**2).sum() * (ry**2).sum()))


def test_spearman_equals_scipy_exactly_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 6, 300).astype(float)  # many ties, like STS-B
        sims = np.round(labels * 0.1 + rng.normal(0, 0.3, 300), 2)  # ties in the scores too
        assert spearman(sims, labels) == scipy.stats.spearmanr(sims, labels).statistic
        assert spearman(sims, labels) == pytest.approx(_manual_spearman(sims, labels), abs=1e-12)
        assert pearson(sims, labels) == pytest.approx(np.corrcoef(sims, labels)[0, 1], abs=1e-12)
    with pytest.warns(UserWarning, match="constant"):
        assert np.isnan(spearman([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]))
    with pytest.raises(InputError, match="same length"):
        spearman([1.0, 2.0], [1.0, 2.0, 3.0])


def test_sts_scores_and_averages():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    y = rng.integers(0, 2, 50)
    s = sts_scores(a, b, y)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert s["main_score"] == s["cosine_spearman"] == pytest.approx(scipy.stats.spearmanr(cos, y).statistic, abs=1e-12)
    assert s["euclidean_spearman"] == pytest.approx(scipy.stats.spearmanr(-np.linalg.norm(a - b, axis=1), y).statistic)
    assert averages([0.2, 0.6], [100, 300]) == {"avg": pytest.approx(0.4), "weighted_avg": pytest.approx(0.5)}


def test_bootstrap_spearman_resamples_pairs():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, 400).astype(float)
    sims = np.round(labels * 0.1 + rng.normal(0, 0.4, 400), 2)
    r = bootstrap_spearman(sims, labels, n_resamples=150, random_state=7, chunk=16)
    assert r.shape == (150,) and np.isfinite(r).all()
    # each replicate is the (tie-aware) Spearman of one resample: redraw the same indices
    g = np.random.default_rng(7)
    idx = g.integers(0, 400, size=(16, 400))
    for i in (0, 5, 15):
        assert r[i] == pytest.approx(spearman(sims[idx[i]], labels[idx[i]]), abs=1e-12)
    low, high = np.percentile(r, [2.5, 97.5])
    assert low < spearman(sims, labels) < high and high - low < 0.2
    assert np.array_equal(r, bootstrap_spearman(sims, labels, n_resamples=150, random_state=7))  # chunking
    # a resample of constant labels is undefined: NaN, not an error
    assert np.isnan(bootstrap_spearman([0.1, 0.2], [0.0, 1.0], n_resamples=50, random_state=0)).any()
    with pytest.raises(InputError, match="n_resamples"):
        bootstrap_spearman(sims, labels, n_resamples=0)


def test_grid_bootstrap_intervals_are_paired_and_reported(enc, data_dir, tmp_path):
    cfg = GridConfig(tasks=["ATEC", "STS-B"], poolings=["cls", "last-avg"], transforms=parse_transforms("0"),
                     bootstrap=200)
    run = run_grid([ModelSpec(str(enc.model_path), enc), ModelSpec("tfidf")], data_dir, cfg)
    for c in run.cells:
        r = run.replicates[(c.model, c.pooling, c.transform, c.task, c.split)]
        assert r.shape == (200,)
        assert c.scores["main_score_ci_low"] <= c.scores["main_score_ci_high"]
    # the same resamples for every row: a row's replicates are reproducible from (seed, task, split)
    data = load_task(data_dir, "STS-B", "valid")
    cos = TfidfEncoder().fit([*data.sentences1, *data.sentences2]).similarity(data.sentences1, data.sentences2)
    r = bootstrap_spearman(cos, data.labels, 200, random_state=[0, 1, 0])
    assert np.array_equal(r, run.replicates[("tfidf", "-", "none", "STS-B", "valid")])
    out = write_report(run, tmp_path / "out", plot=False)
    man = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    row = next(d for d in man["summary"] if d["model"] == "tfidf")
    reps = np.mean([run.replicates[("tfidf", "-", "none", t, "valid")] for t in ("ATEC", "STS-B")], axis=0)
    assert [row["avg_ci_low"], row["avg_ci_high"]] == pytest.approx(np.nanpercentile(reps, [2.5, 97.5]))
    assert man["bootstrap"] == 200
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "| avg 95 % CI |" in table.splitlines()[2]
    assert f"{100 * row['avg_ci_low']:.2f}–{100 * row['avg_ci_high']:.2f}" in table
    cells = [json.loads(ln) for ln in (out / "cells.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all("main_score_ci_low" in c["scores"] for c in cells)
    # without --bootstrap nothing changes
    plain = run_grid([ModelSpec("tfidf")], data_dir, GridConfig(tasks=["ATEC"]))
    assert not plain.replicates and "main_score_ci_low" not in plain.cells[0].scores
    assert "CI" not in markdown_table(plain)


def test_tfidf_baseline_is_char_sublinear_cosine():
    enc = TfidfEncoder().fit(["花呗还款", "花呗花呗", "借呗"])
    sims = enc.similarity(["花呗还款", "花呗", "还款"], ["花呗还款", "借呗", "借"])
    assert sims[0] == pytest.approx(1.0) and sims[2] == 0.0 and 0 < sims[1] < 1
    v = enc.transform(["花花花"]).toarray()[0]  # one feature with tf 3 -> 1 + ln 3 before l2-norm
    assert np.count_nonzero(v) == 1 and v.max() == pytest.approx(1.0)


def test_parsers():
    assert [t.name for t in parse_transforms("0,full,8", jl=["4"])] == ["none", "whitening", "whitening-8", "jl-4"]
    with pytest.raises(InputError, match="--whitening"):
        parse_transforms("0,half")
    assert parse_max_seq_length(None)["PAWSX"] == 128 and parse_max_seq_length(None)["ATEC"] == 64
    assert parse_max_seq_length("PAWSX=32")["PAWSX"] == 32 and set(parse_max_seq_length("48").values()) == {48}
    with pytest.raises(InputError, match="unknown task 'XX'"):
        parse_max_seq_length("XX=3")


# -------------------------------------------------------- grid vs published whitening
def _published(vecs_list):
    """BERT-whitening's compute_kernel_bias / transform_and_normalize (numpy, as published)."""
    vecs = np.concatenate(vecs_list, axis=0)
    mu = vecs.mean(axis=0, keepdims=True)
    cov = np.cov(vecs.T)
    u, s, _vh = np.linalg.svd(cov)
    return np.dot(u, np.diag(1 / np.sqrt(s))), -mu


def _published_score(a, b, labels, kernel, bias):
    def tn(v):
        if kernel is not None:
            v = (v + bias).dot(kernel)
        return v / (v**2).sum(axis=1, keepdims=True) ** 0.5
    return scipy.stats.spearmanr(labels, (tn(a) * tn(b)).sum(axis=1)).correlation


@pytest.fixture(scope="module")
def enc_full_rank(tiny_bert_dir):
    """A fresh random model has LayerNorm gain 1 / bias 0, so its vectors have zero mean across
    features: the covariance is singular and the published 1/sqrt(s) blows up on noise.
    Trained models have learned LayerNorm parameters; give this one random ones."""
    import torch

    e = Encoder(tiny_bert_dir)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in e.model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.5 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=g))
    return e


def test_grid_whitening_matches_published_formula(enc_full_rank, tmp_path):
    enc = enc_full_rank
    # 60 distinct-ish pairs so that 2n > d=32 and the covariance has full rank
    pairs = [(a + b[:k], b + a[:k], (i * 7) % 6) for i, (k, (a, b, _)) in
             enumerate((k, p) for k in range(1, 6) for p in PAIRS_05)]
    write_task(tmp_path, "STS-B", "valid", pairs)
    poolings = ["first-last-avg", "last-avg", "cls"]
    cfg = GridConfig(tasks=["STS-B"], splits=["valid"], poolings=poolings,
                     transforms=parse_transforms("0,full,8"))
    cache = EmbeddingCache(None)
    run = run_grid([ModelSpec("tiny", enc)], tmp_path, cfg, cache)
    ds = load_task(tmp_path, "STS-B", "valid")
    compared = []
    for pooling in poolings:
        # the same vectors the grid used (served by the cache, nothing re-encoded), in float64:
        # a random model's CLS cosines spread by ~1e-6, below float32 rounding
        a = cache.get_or_encode(enc, ds.sentences1, [pooling], 64)[pooling].astype(np.float64)
        b = cache.get_or_encode(enc, ds.sentences2, [pooling], 64)[pooling].astype(np.float64)
        kernel, bias = _published([a, b])
        expected = {"none": _published_score(a, b, ds.labels, None, None),
                    "whitening": _published_score(a, b, ds.labels, kernel, bias),
                    "whitening-8": _published_score(a, b, ds.labels, kernel[:, :8], bias)}
        got = {c.transform: c.scores["main_score"] for c in run.cells if c.pooling == pooling}
        assert got.keys() == expected.keys()
        assert got["none"] == pytest.approx(expected["none"], abs=1e-12)
        ev = np.linalg.eigvalsh(np.cov(np.concatenate([a, b]).T))
        if ev.min() < 1e-6 * ev.max():
            # a random model's CLS barely varies: the harness floors the eigenvalues (eps) where
            # the published code divides by ~0, and says so
            assert any(n.startswith(f"tiny/{pooling}/STS-B") and "rank-deficient" in n for n in run.notes)
            continue
        for k, want in expected.items():
            assert got[k] == pytest.approx(want, abs=1e-9), (pooling, k)
        assert expected["whitening"] != pytest.approx(expected["none"], abs=1e-3)  # it did something
        compared.append(pooling)
    assert "first-last-avg" in compared and cache.n_passes_ == 1


def test_grid_costs_one_encoding_pass(enc, data_dir, monkeypatch):
    calls, forwards = [], []
    real_encode, real_forward = enc.encode_poolings, enc.model.forward
    monkeypatch.setattr(enc, "encode_poolings", lambda s, p, **kw: calls.append((len(s), tuple(p))) or real_encode(s, p, **kw))
    monkeypatch.setattr(enc.model, "forward", lambda *a, **kw: forwards.append(1) or real_forward(*a, **kw))
    cfg = GridConfig(tasks=["STS-B", "BQ"], splits=["valid", "test"], poolings=POOLINGS,
                     transforms=parse_transforms("0,full,8", jl=[4]), batch_size=8)
    cache = EmbeddingCache(None)
    run = run_grid([ModelSpec("tiny", enc), ModelSpec("tfidf")], data_dir, cfg, cache)
    seen: list[set] = []
    for task in ("STS-B", "BQ"):
        dss = [load_task(data_dir, task, s) for s in ("valid", "test")]
        seen.append(set(unique_texts(*[g for d in dss for g in (d.sentences1, d.sentences2)])[0]))
    new = [len(seen[0]), len(seen[1] - seen[0])]  # same max_len: BQ reuses STS-B's sentences
    assert new[1] < len(seen[1])
    # one call per task, every pooling at once, each distinct sentence once
    assert calls == [(new[0], tuple(POOLINGS)), (new[1], tuple(POOLINGS))]
    assert len(forwards) == sum(-(-n // 8) for n in new)
    assert cache.n_encoded_ == len(seen[0] | seen[1]) and run.cache["passes"] == 2
    assert len(run.cells) == 2 * 2 * (4 * 4 + 1)  # tasks × splits × (poolings × transforms + tfidf)


def test_cache_hits_across_runs_and_keys(enc, data_dir, tmp_path):
    cfg = GridConfig(tasks=["STS-B"], splits=["valid"], poolings=["cls", "last-avg"],
                     transforms=parse_transforms("0,full"))
    c1 = EmbeddingCache(tmp_path / "cache")
    r1 = run_grid([ModelSpec("tiny", enc)], data_dir, cfg, c1)
    n = r1.tasks["STS-B"]["n_unique_sentences"]
    assert c1.n_encoded_ == n and c1.n_hits_ == 0
    c2 = EmbeddingCache(tmp_path / "cache")  # a new process would see the same files
    r2 = run_grid([ModelSpec("tiny", enc)], data_dir, cfg, c2)
    assert c2.n_encoded_ == 0 and c2.n_hits_ == 2 * n and c2.n_passes_ == 0
    assert [c.scores for c in r1.cells] == [c.scores for c in r2.cells]
    # a new pooling encodes again (keyed per pooling); a new max_len too
    c3 = EmbeddingCache(tmp_path / "cache")
    texts = load_task(data_dir, "STS-B", "valid").sentences1
    got = c3.get_or_encode(enc, texts, ["cls", "first-last-avg"], max_seq_length=64)
    assert c3.n_encoded_ == len(set(texts)) and c3.n_hits_ == len(set(texts))
    np.testing.assert_allclose(got["first-last-avg"], enc.encode_poolings(texts, ["first-last-avg"],
                               max_seq_length=64)["first-last-avg"], atol=1e-5)
    c3.get_or_encode(enc, texts, ["cls"], max_seq_length=8)
    assert c3.n_encoded_ == 2 * len(set(texts))
    assert len(list((tmp_path / "cache").glob("*/len-8/cls/*.keys.npy"))) == 1


def test_fit_on_split_and_file_change_the_protocol(enc, data_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(a for a, _, _ in PAIRS_05 * 3) + "\n", encoding="utf-8")
    scores, fits = {}, {}
    for fit_on in ("all", "test", str(corpus)):
        cfg = GridConfig(tasks=["STS-B"], splits=["valid"], poolings=["cls"], fit_on=fit_on,
                         transforms=parse_transforms("full"))
        run = run_grid([ModelSpec("tiny", enc)], data_dir, cfg)
        scores[fit_on] = run.cells[0].scores["main_score"]
        fits[fit_on] = run.tasks["STS-B"]["fit"]
    assert fits["all"]["n_vectors"] == 2 * len(PAIRS_05) and fits["all"]["splits"] == ["valid"]
    assert fits["test"]["fit_on"] == "test" and fits["test"]["n_vectors"] == 20
    assert fits[str(corpus)]["fit_on"] == "file" and fits[str(corpus)]["n_vectors"] == 36
    assert len(set(scores.values())) == 3
    with pytest.raises(InputError, match="--fit-on 'nope'"):
        run_grid([ModelSpec("tiny", enc)], data_dir, GridConfig(tasks=["STS-B"], fit_on="nope"))


def test_whitening_dim_between_model_widths_is_skipped_and_noted(enc, data_dir, tmp_path):
    from conftest import TEXTS

    from simkit.models.checkpoint import ModelInfo, save_model
    from simkit.models.factory import build_vocab, new_model

    model, tok = new_model("bert", build_vocab(TEXTS), seed=0, hidden_size=16, num_layers=1,
                           num_heads=2, intermediate_size=32, max_position=128)
    save_model(model, tok, ModelInfo("bert", pooling="pooler", max_seq_length=32), tmp_path / "narrow")
    models = [ModelSpec("tiny", enc), ModelSpec("narrow", Encoder(tmp_path / "narrow"))]
    cfg = GridConfig(tasks=["PAWSX"], poolings=["cls"], transforms=parse_transforms("0,24"))
    run = run_grid(models, data_dir, cfg)
    assert [(c.model, c.transform) for c in run.cells] == [("tiny", "none"), ("tiny", "whitening-24"),
                                                          ("narrow", "none")]
    assert any("narrow/cls/PAWSX: whitening-24 skipped (the vectors have 16 dimensions)" in n for n in run.notes)
    assert run.tasks["PAWSX"]["max_seq_length"] == 128
    # above every model's width: a typo, refused before any encoding rather than an empty column
    for spec in ("0,256", "0,33"):
        cfg = GridConfig(tasks=["PAWSX"], poolings=["cls"], transforms=parse_transforms(spec))
        with pytest.raises(InputError, match=r"^whitening=\d+; expected at most 32 dimensions \(the widest "
                                             r"model has 32\)$"):
            run_grid(models, data_dir, cfg)
    cfg = GridConfig(tasks=["PAWSX"], poolings=["cls"], transforms=parse_transforms("0", jl=[64]))
    with pytest.raises(InputError, match="^jl=64; expected at most 32"):
        run_grid(models, data_dir, cfg)


# ---------------------------------------------------------------------------- report
def test_report_files_are_mteb_shaped(enc, data_dir, tmp_path):
    cfg = GridConfig(tasks=["ATEC", "STS-B"], poolings=["cls", "last-avg"],
                     transforms=parse_transforms("0,full,8,16"))
    run = run_grid([ModelSpec(str(enc.model_path), enc), ModelSpec("tfidf")], data_dir, cfg)
    out = write_report(run, tmp_path / "out", argv=["simkit", "eval"], plot=False)
    res = json.loads(next(out.glob("*/cls/whitening-8/STS-B.json")).read_text(encoding="utf-8"))
    assert res["task_name"] == "STS-B" and res["evaluation_time"] > 0
    score = res["scores"]["valid"][0]
    assert score["main_score"] == score["cosine_spearman"] and {"cosine_pearson", "n_pairs"} <= score.keys()
    cell = next(c for c in run.cells if (c.pooling, c.transform, c.task) == ("cls", "whitening-8", "STS-B"))
    assert score["main_score"] == cell.scores["main_score"]
    man = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert {"torch", "transformers", "simkit"} <= man["versions"].keys()
    assert man["data"]["STS-B"]["splits"]["valid"]["sha256"] == load_task(data_dir, "STS-B", "valid").sha256
    assert man["data"]["STS-B"]["fit"]["fit_on"] == "all" and man["seed"] == 0
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "| model-pooling | ATEC | STS-B | avg | w-avg |" in table
    assert "cells: none / whitening / whitening-8 / whitening-16" in table
    row = next(ln for ln in table.splitlines() if ln.startswith("| tfidf |"))
    assert f"{100 * next(c for c in run.cells if c.model == 'tfidf' and c.task == 'ATEC').scores['main_score']:.2f} / – / – / –" in row
    assert task_result(run, "tfidf", "-", "none", "ATEC")["fit"]["fit_on"] == "all"
    assert markdown_table(run) == table
    with pytest.raises(InputError, match="already exists"):
        write_report(run, out)


def test_plot_needs_matplotlib_or_says_how(enc, data_dir, tmp_path, monkeypatch):
    cfg = GridConfig(tasks=["STS-B"], poolings=["cls"], transforms=parse_transforms("8,16,full"))
    run = run_grid([ModelSpec("tiny", enc)], data_dir, cfg)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'simkit\[plot\]'"):
            write_report(run, tmp_path / "o", plot=True)
        return
    out = write_report(run, tmp_path / "o", plot=True)
    assert (out / "whitening_dim.png").read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'simkit\[plot\]'"):
        write_report(run, tmp_path / "o2", plot=True)
    assert not (write_report(run, tmp_path / "o3") / "whitening_dim.png").exists()  # auto: skipped


def test_missing_split_fails_before_any_encoding(enc, data_dir):
    cache = EmbeddingCache(None)
    cfg = GridConfig(tasks=["STS-B", "PAWSX"], splits=["test"], poolings=["cls"])
    with pytest.raises(InputError, match=r"PAWSX\.test\.data: no such file; found for PAWSX: PAWSX\.valid\.data"):
        run_grid([ModelSpec("tiny", enc)], data_dir, cfg, cache)
    assert cache.n_encoded_ == 0


def test_tie_round_merges_rounding_noise_only():
    from simkit_eval.scoring import tie_round

    noise = [0.9999999999999993, 1.0, 1.0000000000000007, -2.5000000000000004, 0.0, float("nan")]
    assert tie_round(noise)[:5].tolist() == [1.0, 1.0, 1.0, -2.5, 0.0] and np.isnan(tie_round(noise)[5])
    rng = np.random.default_rng(0)
    x = np.sort(rng.normal(size=1000) * 10.0 ** rng.integers(-5, 5, 1000))  # many magnitudes
    assert (np.diff(tie_round(x)) >= 0).all()  # monotone: merges, never reorders
    assert np.allclose(tie_round(x), x, rtol=1e-11, atol=0)
    close = np.array([0.999999, 0.999998, 0.9999995])  # 1e-6 apart: kept apart, order kept
    assert spearman(close, [2.0, 1.0, 3.0]) == 1.0
