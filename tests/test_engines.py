"""Sharded embedding stores, the local and ray engines, resuming, and streaming downstream.

The Ray tests share one local Ray instance for the whole session (``ray_session``): starting
Ray costs seconds, a job on a running one about a second plus the workers' start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TEXTS
from simkit_cli.app import app
from typer.testing import CliRunner

from simkit.embed import apply_transform, encode_corpus, fit_store
from simkit.engines import encode_sharded
from simkit.engines.shards import stage_dir
from simkit.errors import FormatError, InputError
from simkit.fsutil import resolve_version
from simkit.index.build import build_index
from simkit.pipeline import Pipeline
from simkit.store import EmbeddingStore, ShardedArray, file_sha256, write_ids
from simkit.transforms import Whitening

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _lines(n: int, tag: str) -> list[str]:
    return [f"{TEXTS[i % len(TEXTS)]}{tag}{i}" for i in range(n)]


@pytest.fixture
def corpus(tmp_path):
    """Two .txt and two .jsonl files (57 records), in the order a job takes them."""
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.txt").write_text("\n".join(_lines(20, "甲")) + "\n", encoding="utf-8")
    (d / "b.txt").write_text("\n".join(_lines(7, "乙")) + "\n", encoding="utf-8")
    for name, n in (("c.jsonl", 18), ("d.jsonl", 12)):
        rows = [json.dumps({"id": f"{name}-{i}", "text": t}, ensure_ascii=False)
                for i, t in enumerate(_lines(n, name[0]))]
        (d / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return [d / "a.txt", d / "b.txt", d / "c.jsonl", d / "d.jsonl"]


def _expected_ids(corpus) -> list[str]:
    ids = [str(i) for i in range(1, 21)] + [str(i) for i in range(1, 8)]
    return ids + [f"c.jsonl-{i}" for i in range(18)] + [f"d.jsonl-{i}" for i in range(12)]


def _same_store(a: EmbeddingStore, b: EmbeddingStore, atol: float = 1e-5) -> None:
    assert a.ids == b.ids
    assert a.embeddings.shape == b.embeddings.shape
    assert np.abs(np.asarray(a.embeddings) - np.asarray(b.embeddings)).max() <= atol


def reshard(src: Path, out: Path, shard_size: int) -> Path:
    """A sharded store holding exactly the vectors of the single-file store ``src``."""
    one = EmbeddingStore.load(src)
    (out / "shards").mkdir(parents=True)
    shards = []
    for k, a in enumerate(range(0, len(one.ids), shard_size)):
        name = f"part-{k:05d}"
        np.save(out / "shards" / f"{name}.npy", np.ascontiguousarray(one.embeddings[a: a + shard_size]))
        write_ids(out / "shards" / f"{name}.ids", one.ids[a: a + shard_size])
        shards.append({"name": name, "count": len(one.ids[a: a + shard_size]), "input": 0, "start": a,
                       "sha256": file_sha256(out / "shards" / f"{name}.npy")})
    (out / "pipeline").mkdir()
    one.pipeline.save_into(out / "pipeline")
    manifest = {**one.manifest, "format_version": 2, "shards": shards}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out


# -- the store ------------------------------------------------------------------------------
def test_local_sharded_equals_single_file(tmp_path, corpus, tiny_bert_dir):
    out = tmp_path / "sharded"
    summary = encode_sharded(corpus, out, Pipeline(tiny_bert_dir), shard_size=8)
    store = EmbeddingStore.load(out)
    assert store.sharded and summary["count"] == 57 and summary["shards"] == 3 + 1 + 3 + 2
    assert store.ids == _expected_ids(corpus)
    assert not stage_dir(out).exists()
    manifest = json.loads((resolve_version(out) / "manifest.json").read_text())  # a versioned artifact
    assert manifest["format_version"] == 2 and manifest["dim"] == 32
    assert [i["records"] for i in manifest["inputs"]] == [20, 7, 18, 12]
    assert all(i["sha256"].startswith("sha256:") for i in manifest["inputs"])
    assert [s["count"] for s in manifest["shards"]] == [8, 8, 4, 7, 8, 8, 2, 8, 4]
    encode_corpus(corpus[2], tmp_path / "single", Pipeline(tiny_bert_dir))
    single = EmbeddingStore.load(tmp_path / "single")
    assert json.loads((resolve_version(tmp_path / "single") / "manifest.json").read_text())["format_version"] == 1
    rows = slice(27, 45)
    assert store.ids[rows] == single.ids
    assert np.abs(store.embeddings[rows] - single.embeddings).max() <= 1e-5
    assert store.pipeline.fingerprint == single.pipeline.fingerprint


def test_sharded_array_indexing_and_chunks(tmp_path, tiny_bert_dir):
    parts = [np.arange(i * 12, (i + n) * 12, dtype=np.float32).reshape(-1, 4) for i, n in ((0, 2), (2, 1), (3, 3))]
    arr = ShardedArray([p.reshape(-1, 4) for p in parts], 4)
    full = np.concatenate(arr.parts)
    assert arr.shape == full.shape == (18, 4) and len(arr) == 18
    for key in (slice(None), slice(2, 11), slice(5, 7), slice(None, None, 3), 7, -1, [0, 17, 6, 6],
                np.arange(18) % 2 == 0, (slice(1, 9), 2)):
        np.testing.assert_array_equal(arr[key], full[key])
    np.testing.assert_array_equal(np.asarray(arr), full)
    with pytest.raises(IndexError):
        arr[18]


def test_iter_chunks_never_cross_shards_and_load_checks(tmp_path, tiny_bert_dir):
    encode_corpus(_write(tmp_path / "t.txt", _lines(25, "x")), tmp_path / "one", Pipeline(tiny_bert_dir))
    sh = reshard(tmp_path / "one", tmp_path / "sh", 10)
    store, one = EmbeddingStore.load(sh), EmbeddingStore.load(tmp_path / "one")
    chunks = list(store.iter_chunks(4))
    assert [(a, len(X)) for a, X in chunks] == [(0, 4), (4, 4), (8, 2), (10, 4), (14, 4), (18, 2), (20, 4), (24, 1)]
    np.testing.assert_array_equal(np.concatenate([X for _, X in chunks]), one.embeddings)
    assert [len(X) for _, X in one.iter_chunks(10)] == [10, 10, 5]
    assert store.locate(13) == (sh / "shards" / "part-00001.npy", 3)
    m = json.loads((sh / "manifest.json").read_text())
    m["shards"][1]["count"] = 9
    (sh / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatError, match="part-00001.npy"):
        EmbeddingStore.load(sh)
    m["shards"][1] = {"name": "../../x", "count": 10}
    (sh / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatError, match="bad shard entry"):
        EmbeddingStore.load(sh)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- downstream ------------------------------------------------------------------------------
def test_sharded_store_feeds_whitening_apply_and_index(tmp_path, tiny_bert_dir):
    encode_corpus(_write(tmp_path / "t.txt", _lines(300, "y")), tmp_path / "one", Pipeline(tiny_bert_dir))
    sh = reshard(tmp_path / "one", tmp_path / "sh", 70)
    for emb in ("one", "sh"):  # the CLI, as a user runs it
        res = runner.invoke(app, ["-q", "whiten", "fit", str(tmp_path / emb), "--n-components", "16",
                                  "--streaming", "--chunk-size", "32", "-o", str(tmp_path / f"w-{emb}")])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["-q", "index", "build", str(tmp_path / emb), "--preset", "ivf",
                                  "--chunk-size", "50", "-o", str(tmp_path / f"idx-{emb}")])
        assert res.exit_code == 0, res.output
    from simkit.index.base import load_index
    from simkit.transforms import load_transform

    w_one, w_sh = load_transform(tmp_path / "w-one"), load_transform(tmp_path / "w-sh")
    X = EmbeddingStore.load(tmp_path / "one").embeddings[:40]
    np.testing.assert_allclose(w_sh.transform(X), w_one.transform(X), rtol=1e-4, atol=1e-5)
    a, b = load_index(tmp_path / "idx-one"), load_index(tmp_path / "idx-sh")
    ha, hb = a.search(X, top_k=5), b.search(X, top_k=5)
    assert [[h["id"] for h in q] for q in ha] == [[h["id"] for h in q] for q in hb]
    # apply: a sharded store gives the same shards, transformed
    w = fit_store(sh, Whitening(16), streaming=True, chunk_size=32)
    apply_transform(sh, w, tmp_path / "sh16")
    apply_transform(tmp_path / "one", w, tmp_path / "one16")
    s16, o16 = EmbeddingStore.load(tmp_path / "sh16"), EmbeddingStore.load(tmp_path / "one16")
    assert s16.sharded and [s["count"] for s in s16.manifest["shards"]] == [70, 70, 70, 70, 20]
    _same_store(s16, o16, atol=0)
    assert s16.pipeline.dim == 16


def test_index_build_trains_on_a_sample(tmp_path, tiny_bert_dir):
    encode_corpus(_write(tmp_path / "t.txt", _lines(400, "z")), tmp_path / "one", Pipeline(tiny_bert_dir))
    sh = reshard(tmp_path / "one", tmp_path / "sh", 90)
    full = build_index(sh, preset="ivf", chunk_size=64)
    sampled = build_index(sh, preset="ivf", chunk_size=64, train_size=390, seed=1)
    assert len(full) == len(sampled) == 400
    assert full.factory_ == sampled.factory_  # nlist sized for the 400 vectors, not the 390 sampled
    X = EmbeddingStore.load(sh).embeddings[:10]
    assert [h[0]["id"] for h in full.search(X, top_k=1, nprobe=full._ivf.nlist)] == EmbeddingStore.load(sh).ids[:10]


def test_nan_in_a_shard_names_the_shard_and_row(tmp_path, tiny_bert_dir):
    encode_corpus(_write(tmp_path / "t.txt", _lines(30, "n")), tmp_path / "one", Pipeline(tiny_bert_dir))
    sh = reshard(tmp_path / "one", tmp_path / "sh", 10)
    X = np.load(sh / "shards" / "part-00002.npy")
    X[3, 0] = np.nan
    np.save(sh / "shards" / "part-00002.npy", X)
    with pytest.raises(InputError, match=r"part-00002.npy: row 3 contains NaN"):
        fit_store(sh, Whitening(8), streaming=True, chunk_size=4)


# -- resuming --------------------------------------------------------------------------------
def test_interrupted_job_resumes_and_skips_complete_shards(tmp_path, corpus, tiny_bert_dir, monkeypatch):
    from simkit.engines import shards

    out = tmp_path / "out"
    real, done = shards.encode_shard, []

    def flaky(stage, task, *args, **kwargs):
        if len(done) == 4:
            raise RuntimeError("worker lost")
        done.append(task.name)
        return real(stage, task, *args, **kwargs)

    monkeypatch.setattr("simkit.engines.local.encode_shard", flaky)
    with pytest.raises(RuntimeError, match="worker lost"):
        encode_sharded(corpus, out, Pipeline(tiny_bert_dir), shard_size=8)
    assert not out.exists() and len(list((stage_dir(out) / "shards").glob("*.json"))) == 4
    monkeypatch.setattr("simkit.engines.local.encode_shard", real)
    again = []
    monkeypatch.setattr("simkit.engines.local.encode_shard",
                        lambda stage, task, *a, **k: again.append(task.name) or real(stage, task, *a, **k))
    summary = encode_sharded(corpus, out, Pipeline(tiny_bert_dir), shard_size=8)
    assert summary["shards_resumed"] == 4 and again == [f"part-{k:05d}" for k in range(4, 9)]
    encode_sharded(corpus, tmp_path / "ref", Pipeline(tiny_bert_dir), shard_size=8)
    _same_store(EmbeddingStore.load(out), EmbeddingStore.load(tmp_path / "ref"), atol=0)


def test_staged_shards_of_another_job_are_not_reused(tmp_path, corpus, tiny_bert_dir, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr("simkit.engines.shards.finish", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        encode_sharded(corpus[:2], out, Pipeline(tiny_bert_dir), shard_size=8)
    monkeypatch.undo()
    # a damaged shard is redone, and other inputs start over
    npy = stage_dir(out) / "shards" / "part-00001.npy"
    npy.write_bytes(npy.read_bytes()[:-4] + b"\0\0\0\0")
    summary = encode_sharded(corpus[:2], out, Pipeline(tiny_bert_dir), shard_size=8, overwrite=True)
    assert summary["shards_resumed"] == 3
    summary = encode_sharded(corpus[1:3], tmp_path / "o2", Pipeline(tiny_bert_dir), shard_size=8)
    assert summary["shards_resumed"] == 0
    with pytest.raises(InputError, match="already exists"):
        encode_sharded(corpus, out, Pipeline(tiny_bert_dir))


KILLED_JOB = """
import sys, time
from simkit.pipeline import Pipeline
from simkit.engines import encode_sharded
real = Pipeline.encode
def slow(self, *a, **k):
    time.sleep(0.4)
    return real(self, *a, **k)
Pipeline.encode = slow
encode_sharded(sys.argv[3:], sys.argv[2], Pipeline(sys.argv[1]), shard_size=8)
"""


def kill_mid_run(tmp_path: Path, corpus, model: Path, out: Path) -> int:
    """Run a (slowed) local job in a subprocess and SIGKILL it once two shards are complete."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(KILLED_JOB))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(model), str(out), *map(str, corpus)], env=env)
    done = stage_dir(out) / "shards"
    deadline = time.monotonic() + 120
    try:
        while len(list(done.glob("*.json"))) < 2:
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "the job never completed a shard"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return len(list(done.glob("*.json")))


def test_killed_driver_leaves_no_store_and_resumes(tmp_path, corpus, tiny_bert_dir):
    out = tmp_path / "out"
    staged = kill_mid_run(tmp_path, corpus, tiny_bert_dir, out)
    assert not out.exists() and 2 <= staged < 9
    summary = encode_sharded(corpus, out, Pipeline(tiny_bert_dir), shard_size=8)
    assert summary["shards_resumed"] == staged
    encode_sharded(corpus, tmp_path / "ref", Pipeline(tiny_bert_dir), shard_size=8)
    _same_store(EmbeddingStore.load(out), EmbeddingStore.load(tmp_path / "ref"), atol=0)


# -- inputs and CLI --------------------------------------------------------------------------
def test_globs_directories_and_parquet(tmp_path, corpus, tiny_bert_dir):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts = _lines(11, "p")
    pq.write_table(pa.table({"text": texts}), tmp_path / "corpus" / "e.parquet")
    a = encode_sharded([str(tmp_path / "corpus" / "*.txt"), tmp_path / "corpus" / "e.parquet"], tmp_path / "o",
                       Pipeline(tiny_bert_dir), shard_size=8)
    store = EmbeddingStore.load(tmp_path / "o")
    assert a["count"] == 38 and store.ids[27:] == [str(i) for i in range(1, 12)]
    ref = Pipeline(tiny_bert_dir).encode(texts)
    assert np.abs(store.embeddings[27:] - ref).max() <= 1e-5
    with pytest.raises(InputError, match="matches no file"):
        encode_sharded([str(tmp_path / "*.nothing")], tmp_path / "o2", Pipeline(tiny_bert_dir))


def test_cli_sharded_local_and_ray_hint(tmp_path, corpus, tiny_bert_dir, monkeypatch):
    res = runner.invoke(app, ["-q", "encode", *map(str, corpus), "-m", str(tiny_bert_dir), "-o", str(tmp_path / "o"),
                              "--shard-size", "10"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["shards"] == 7
    assert EmbeddingStore.load(tmp_path / "o").ids == _expected_ids(corpus)
    monkeypatch.setattr("simkit.engines.ray_available", lambda: False)
    res = runner.invoke(app, ["encode", str(corpus[0]), "--engine", "ray", "-o", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert res.stderr.strip().count("\n") == 0 and "pip install 'simkit[ray]'" in res.stderr
    assert not (tmp_path / "r").exists()


# -- ray -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def test_ray_engine_equals_local_engine(tmp_path, corpus, tiny_bert_dir, ray_session):
    encode_sharded(corpus, tmp_path / "local", Pipeline(tiny_bert_dir), shard_size=8)
    res = runner.invoke(app, ["-q", "encode", *map(str, corpus), "-m", str(tiny_bert_dir), "-o", str(tmp_path / "ray"),
                              "--engine", "ray", "--num-workers", "2", "--shard-size", "8", "-b", "4"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["engine"] == "ray" and summary["workers"] == 2 and summary["count"] == 57
    ray_store, local = EmbeddingStore.load(tmp_path / "ray"), EmbeddingStore.load(tmp_path / "local")
    assert ray_store.ids == _expected_ids(corpus)
    _same_store(ray_store, local)
    assert [(s["name"], s["count"], s["input"], s["start"]) for s in ray_store.manifest["shards"]] == \
        [(s["name"], s["count"], s["input"], s["start"]) for s in local.manifest["shards"]]


def test_ray_finishes_a_killed_job(tmp_path, corpus, tiny_bert_dir, ray_session):
    out = tmp_path / "out"
    staged = kill_mid_run(tmp_path, corpus, tiny_bert_dir, out)
    summary = encode_sharded(corpus, out, Pipeline(tiny_bert_dir), engine="ray", num_workers=1, shard_size=8)
    assert summary["shards_resumed"] == staged and summary["engine"] == "ray"
    encode_sharded(corpus, tmp_path / "ref", Pipeline(tiny_bert_dir), shard_size=8)
    _same_store(EmbeddingStore.load(out), EmbeddingStore.load(tmp_path / "ref"))


def test_index_built_shard_by_shard_with_inverted_lists_on_disk(tmp_path, tiny_bert_dir, capfd):
    from simkit.index.base import load_index

    encode_corpus(_write(tmp_path / "t.txt", _lines(400, "d")), tmp_path / "one", Pipeline(tiny_bert_dir))
    sh = reshard(tmp_path / "one", tmp_path / "sh", 90)
    ram = build_index(sh, preset="ivf", chunk_size=64)
    res = runner.invoke(app, ["-q", "index", "build", str(sh), "--preset", "ivf", "--chunk-size", "64",
                              "--on-disk", "-o", str(tmp_path / "idx")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["on_disk"] is True
    assert (resolve_version(tmp_path / "idx") / "index.ivfdata").is_file()
    assert "resizing" in capfd.readouterr().err  # FAISS's own lines go to stderr, not the data
    # scratch removed (the writer lock files stay beside artifacts on purpose)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")) == []
    X = EmbeddingStore.load(sh).embeddings[:20]
    want = [[h["id"] for h in q] for q in ram.search(X, top_k=5)]
    for mmap in (False, True):
        disk = load_index(tmp_path / "idx", mmap=mmap)
        assert len(disk) == 400 and [[h["id"] for h in q] for q in disk.search(X, top_k=5)] == want
    with pytest.raises(InputError, match="on disk"):
        load_index(tmp_path / "idx").add(X[:1], ["new"])
    # The directory `simkit encode` writes (a versioned store) streams and goes on disk too.
    res = runner.invoke(app, ["-q", "index", "build", str(tmp_path / "one"), "--preset", "ivf", "--chunk-size",
                              "64", "--on-disk", "-o", str(tmp_path / "idx2")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["on_disk"] is True and len(load_index(tmp_path / "idx2")) == 400
    # FAISS prints where it found index.ivfdata from C, on file descriptor 1: not into the data
    np.save(tmp_path / "q.npy", X[:2])
    out = subprocess.run([sys.executable, "-c", "from simkit_cli.app import main; main()", "-q", "index", "query",
                          str(tmp_path / "idx"), "--vectors", str(tmp_path / "q.npy"), "-k", "3"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [len(json.loads(line)["results"]) for line in out.stdout.splitlines()] == [3, 3]
