"""Versioned artifacts, --overwrite trust, and the crash / number cases of issue 18."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sqlite3

import numpy as np
import pytest
from simkit_cli.app import app
from typer.testing import CliRunner

import simkit.fsutil as fsutil
from simkit.errors import FormatError, InputError, SimkitError
from simkit.fsutil import (
    artifact_status,
    artifact_version,
    atomic_dir,
    load_versioned,
    resolve_version,
)
from simkit.index import LSHIndex, VectorIndex, load_index
from simkit.store import EmbeddingStore
from simkit.transforms import Chain, Normalize, Whitening, load_transform, save_transform


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((60, 8)).astype(np.float32), [f"d{i}" for i in range(60)]


def _save(X, ids, path, n=None, **kw):
    VectorIndex(preset="flat").add(X[:n], ids[:n], texts=[f"t{i}" for i in ids[:n]], **kw).save(path, overwrite=True)


def cli(*args):
    return CliRunner().invoke(app, ["-q", *map(str, args)])


# -- layout ----------------------------------------------------------------------------------
def test_versions_pointer_and_cleanup(tmp_path, data, monkeypatch):
    X, ids = data
    path = tmp_path / "idx"
    assert artifact_version(path) is None
    _save(X, ids, path, 10)
    v1 = artifact_version(path)
    assert sorted(os.listdir(path)) == ["CURRENT", v1] and resolve_version(path) == path / v1
    assert (tmp_path / ".idx.lock").is_file()  # the writers' lock lives beside the artifact
    _save(X, ids, path, 20)
    v2 = artifact_version(path)
    assert v2 != v1 and sorted(os.listdir(path)) == ["CURRENT", v1, v2]  # the previous one is kept
    for n in range(12):  # rapid writes: recent versions are kept for readers, but not without bound
        _save(X, ids, path, 10 + n)
    assert len([v for v in os.listdir(path) if v.startswith("v-")]) == fsutil.GRACE_MAX_VERSIONS + 2
    v2 = artifact_version(path)
    monkeypatch.setattr(fsutil, "GRACE_SECONDS", 0.0)
    _save(X, ids, path, 20)
    v1, v2 = v2, artifact_version(path)
    (path / ".tmp-v-000099-deadbeef").mkdir()  # a crashed writer's temporary
    assert artifact_status(path)["leftovers"] == [".tmp-v-000099-deadbeef"]
    _save(X, ids, path, 30)
    v3 = artifact_version(path)
    assert sorted(os.listdir(path)) == ["CURRENT", v2, v3] and len(load_index(path)) == 30
    assert int(v3.split("-")[1]) == 100  # numbering never reuses a crashed writer's number


def test_legacy_layout_loads_and_upgrades(tmp_path, data, monkeypatch):
    X, ids = data
    path = tmp_path / "idx"
    _save(X, ids, path, 10)
    version = resolve_version(path)  # rewrite it as the previous release did: files inside
    for f in version.iterdir():
        shutil.move(str(f), str(path / f.name))
    (path / "CURRENT").unlink()
    version.rmdir()
    assert artifact_status(path)["layout"] == "legacy" and len(load_index(path)) == 10
    token = artifact_version(path)
    assert token.startswith("legacy-")
    _save(X, ids, path, 20)  # the first versioned write over it
    assert artifact_status(path)["layout"] == "versioned" and len(load_index(path)) == 20
    assert artifact_version(path) != token and (path / "config.json").is_file()  # old files kept once
    monkeypatch.setattr(fsutil, "GRACE_SECONDS", 0.0)
    _save(X, ids, path, 30)
    assert not (path / "config.json").exists() and len(load_index(path)) == 30
    assert artifact_status(path)["leftovers"] == []


def test_reader_retries_when_its_version_is_removed(tmp_path, data, monkeypatch):
    X, ids = data
    path = tmp_path / "idx"
    _save(X, ids, path, 10)
    monkeypatch.setattr(fsutil, "GRACE_SECONDS", 0.0)
    calls = []

    def load(version):
        calls.append(version)
        if len(calls) == 1:  # two writers finish between our pointer read and our open
            _save(X, ids, path, 20)
            _save(X, ids, path, 30)
            assert not version.exists()
        return load_index(version)

    assert len(load_versioned(path, load)) == 30 and len(calls) == 2


def test_index_info_reports_version_and_leftovers(tmp_path, data):
    X, ids = data
    _save(X, ids, tmp_path / "idx", 10)
    (tmp_path / ".idx.tmp-abc").mkdir()
    res = cli("index", "info", tmp_path / "idx")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["version"] == artifact_version(tmp_path / "idx") and info["layout"] == "versioned"
    assert info["leftovers"] == ["../.idx.tmp-abc"] and info["count"] == 10 and "config.json" in info["files"]


def test_model_dirs_stay_flat_and_swap_whole(tmp_path, tiny_bert_dir):
    from simkit.models.checkpoint import load_model, save_model

    model, tok, info = load_model(tiny_bert_dir)
    out = tmp_path / "m"
    save_model(model, tok, info, out)
    save_model(model, tok, info, out, overwrite=True)
    assert (out / "config.json").is_file() and not (out / "CURRENT").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != ".m.lock"] == ["m"]
    with pytest.raises(InputError, match="config.json: format 'simkit-model'; .* not a 'simkit-transform' artifact"):
        save_transform(Chain([Normalize().fit(np.ones((1, 2)))]), out, overwrite=True)


# -- --overwrite only replaces a simkit artifact of the same kind ------------------------------
def test_overwrite_refuses_foreign_directories(tmp_path, data):
    X, ids = data
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(InputError, match=r"home/config.json: not found; .* not a simkit artifact, refusing"):
        _save(X, ids, home)
    assert (home / "thesis.tex").read_text() == "years of work"
    save_transform(Chain([Normalize().fit(X)]), tmp_path / "w")
    with pytest.raises(InputError, match=r"config.json: format 'simkit-transform'; .* not a 'simkit-index' artifact"):
        _save(X, ids, tmp_path / "w")
    assert len(load_transform(tmp_path / "w").steps) == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        _save(X, ids, tmp_path / "file")
    (tmp_path / "empty").mkdir()
    _save(X, ids, tmp_path / "empty")  # an empty directory is fine
    with atomic_dir(tmp_path / "emb", kind="simkit-embeddings") as tmp:
        EmbeddingStore.write(tmp, X, ids, {})
    res = cli("index", "build", tmp_path / "emb", "-o", home, "--overwrite")
    assert res.exit_code == 1 and "refusing" in res.stderr and "Traceback" not in res.output


def test_lock_is_reentrant_and_times_out_for_other_threads(tmp_path):
    import threading

    errors = []
    with fsutil.artifact_lock(tmp_path / "a", timeout=0.1):
        with atomic_dir(tmp_path / "a", kind="simkit-x") as tmp:  # atomic_dir re-enters the lock
            (tmp / "config.json").write_text('{"format": "simkit-x"}')

        def other():
            try:
                with fsutil.artifact_lock(tmp_path / "a", timeout=0.1):
                    pass
            except InputError as e:
                errors.append(str(e))

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert errors and "another writer holds the lock" in errors[0] and str(tmp_path / "a") in errors[0]


# -- every config key and array checked on load ------------------------------------------------
def _edit(path, fn):
    f = resolve_version(path) / "config.json"
    cfg = json.loads(f.read_text())
    fn(cfg)
    f.write_text(json.dumps(cfg))


@pytest.mark.parametrize("key", ["dim", "dim_in", "count", "kind", "metric", "factory"])
def test_index_config_missing_key(tmp_path, data, key):
    X, ids = data
    _save(X, ids, tmp_path / "idx", 10)
    _edit(tmp_path / "idx", lambda c: c.pop(key))
    with pytest.raises(FormatError, match=f"config.json: missing key '{key}'"):
        load_index(tmp_path / "idx")


@pytest.mark.parametrize("key,value", [("nbits", None), ("rerank", "10"), ("center", 1), ("nbits", 7), ("mode", "x")])
def test_lsh_config_bad_values(tmp_path, data, key, value):
    X, ids = data
    LSHIndex(nbits=16).add(X, ids).save(tmp_path / "lsh")
    _edit(tmp_path / "lsh", lambda c: c.update({key: value}))
    with pytest.raises(FormatError, match="config.json"):
        load_index(tmp_path / "lsh")


def test_index_transform_must_be_its_own(tmp_path, data):
    X, ids = data
    chain = Chain([Whitening(4)]).fit(X)
    save_transform(chain, tmp_path / "outside")
    VectorIndex(preset="flat", transform=chain).add(X, ids).save(tmp_path / "idx")
    _edit(tmp_path / "idx", lambda c: c.update({"transform": str(resolve_version(tmp_path / "outside"))}))
    with pytest.raises(FormatError, match=r"key 'transform' .*\(no paths outside the index\)"):
        load_index(tmp_path / "idx")


@pytest.mark.parametrize("name,bad", [("vectors", "f64"), ("vectors", "nan"), ("codes", "f32"), ("labels", "dup")])
def test_lsh_arrays_checked(tmp_path, data, name, bad):
    X, ids = data
    LSHIndex(nbits=16).add(X, ids).save(tmp_path / "lsh")
    f = resolve_version(tmp_path / "lsh") / f"{name}.npy"
    arr = np.load(f)
    arr = {"f64": lambda a: a.astype(np.float64), "f32": lambda a: a.astype(np.float32),
           "nan": lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a).astype(a.dtype),
           "dup": lambda a: np.zeros_like(a)}[bad](arr)
    np.save(f, arr)
    with pytest.raises(FormatError, match=name):
        load_index(tmp_path / "lsh")


def test_store_damage_is_a_format_error(tmp_path, data):
    X, ids = data
    _save(X, ids, tmp_path / "idx", 10, metadata=[{"k": i} for i in range(10)])
    db = resolve_version(tmp_path / "idx") / "store.sqlite"
    con = sqlite3.connect(db)
    con.execute("UPDATE docs SET metadata = '{not json' WHERE label = 3")
    con.commit()
    idx = load_index(tmp_path / "idx")
    with pytest.raises(FormatError, match="store.sqlite: unreadable text or metadata"):
        idx.search(X[3], top_k=10)
    con.execute("UPDATE docs SET label = label + 1000, metadata = NULL")  # FAISS labels without documents
    con.execute("UPDATE meta SET value = '2000' WHERE key = 'next_label'")
    con.commit()
    con.close()
    with pytest.raises(FormatError, match="has no document in store.sqlite"):
        load_index(tmp_path / "idx")


def test_embedding_store_damage(tmp_path, data):
    X, ids = data
    with atomic_dir(tmp_path / "emb", kind="simkit-embeddings") as tmp:
        EmbeddingStore.write(tmp, X, ids, {})
    f = resolve_version(tmp_path / "emb") / "ids.txt"
    f.write_bytes(b"a\nb\xff\n" + b"x\n" * 58)
    with pytest.raises(FormatError, match=r"ids.txt:2: invalid UTF-8"):
        EmbeddingStore.load(tmp_path / "emb")
    res = cli("whiten", "fit", tmp_path / "emb", "-o", tmp_path / "w")
    assert res.exit_code == 1 and "ids.txt:2: invalid UTF-8" in res.stderr


def test_model_config_missing_key(tmp_path, tiny_bert_dir):
    from simkit.models.checkpoint import load_model

    shutil.copytree(tiny_bert_dir, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    del cfg["backbone_config"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="config.json: missing key 'backbone_config'"):
        load_model(tmp_path / "m")
    cfg["backbone_config"] = {"hidden_size": 30, "num_attention_heads": 4}
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="config.json"):
        load_model(tmp_path / "m")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_trainer_state_is_refused_cleanly(tmp_path, tiny_bert_dir):
    from simkit.models.checkpoint import load_model
    from simkit.train.data import load_training_files
    from simkit.train.trainer import TrainConfig, Trainer, TrainingError

    ck = tmp_path / "ck"
    shutil.copytree(tiny_bert_dir, ck)
    with open(ck / "trainer_state.pt", "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("花呗怎么还款\t花呗如何还款\t1\n借呗可以提前还款吗\t借呗能提前还吗\t1\n", encoding="utf-8")
    model, tok, info = load_model(tiny_bert_dir)
    pos, lab = load_training_files([pairs])
    t = Trainer(model, tok, info, TrainConfig(batch_size=2, max_steps=1), pos, lab, device="cpu")
    with pytest.raises(TrainingError, match="trainer_state.pt: not a loadable trainer state"):
        t.train(tmp_path / "out", resume_from=ck)
    assert not (tmp_path / "out").exists()


# -- crashes become one-line errors ------------------------------------------------------------
def test_full_disk_is_refused_before_the_memmap(tmp_path, tiny_bert_dir, monkeypatch):
    corpus = tmp_path / "c.txt"
    corpus.write_text("花呗\n借呗\n", encoding="utf-8")

    def full(fd, offset, size):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    res = cli("encode", corpus, "-m", tiny_bert_dir, "-o", tmp_path / "emb")
    assert res.exit_code == 1 and f"{tmp_path / 'emb' / 'embeddings.npy'}: not enough free space" in res.stderr
    assert not (tmp_path / "emb").exists()

    class Full:  # a file system without fallocate: the free space is checked instead
        f_bavail, f_frsize = 0, 4096

    def unsupported(fd, offset, size):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    monkeypatch.setattr(os, "statvfs", lambda p: Full())
    res = cli("encode", corpus, "-m", tiny_bert_dir, "-o", tmp_path / "emb")
    assert res.exit_code == 1 and "not enough free space" in res.stderr and not (tmp_path / "emb").exists()


def test_os_errors_are_one_line(tmp_path, tiny_bert_dir):
    corpus = tmp_path / "c.txt"
    corpus.write_text("花呗\n", encoding="utf-8")
    (tmp_path / "f").write_text("x")
    res = cli("encode", corpus, "-m", tiny_bert_dir, "-o", tmp_path / "f" / "emb")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "not a directory" in res.stderr and str(tmp_path / "f") in res.stderr

    assert "no space left" in str(fsutil.os_error(OSError(28, "x"), tmp_path / "x"))
    assert fsutil.os_error(OSError(30, "x"), "p").args[0] == "p: cannot write (read-only file system)"


def _refuse_writes(monkeypatch, under, err: int, reads: bool = False) -> None:
    """Make every write below ``under`` fail with ``err`` (and every read, with ``reads``).

    The tests run as root, which the kernel lets write anywhere, so the refusal a read-only
    mount (EROFS) or a foreign directory (EACCES) gives is raised where the kernel raises it:
    at ``open`` (built-in, ``io`` and pathlib's), ``os.open`` and every call that changes
    a directory, on either of its paths.
    """
    import builtins
    import io

    under = os.path.realpath(under)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def hit(p) -> bool:
        if not isinstance(p, (str, os.PathLike)):
            return False
        p = os.path.realpath(p)
        return p == under or p.startswith(under + os.sep)

    def refuse(p) -> None:
        raise OSError(err, os.strerror(err), str(p))

    real_open, real_os_open = io.open, os.open

    def fake_open(file, mode="r", *a, **k):
        if hit(file) and (reads or any(c in mode for c in "wax+")):
            refuse(file)
        return real_open(file, mode, *a, **k)

    def fake_os_open(path, flags, *a, **k):
        if hit(path) and (reads or flags & write_flags):
            refuse(path)
        return real_os_open(path, flags, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    for name in ("mkdir", "rmdir", "unlink", "remove", "rename", "replace", "link", "symlink"):
        real = getattr(os, name)

        def fake(*args, _real=real, **k):
            for p in args[:2]:  # (path) or (src, dst): both must be writable
                if hit(p):
                    refuse(p)
            return _real(*args, **k)

        monkeypatch.setattr(os, name, fake)


def _tree(root) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_read_only_and_permission_refusals(tmp_path, tiny_bert_dir, data, monkeypatch):
    X, ids = data
    corpus = tmp_path / "c.txt"
    corpus.write_text("花呗\n借呗\n", encoding="utf-8")
    idx = tmp_path / "ro" / "idx"
    _save(X, ids, idx, 10)
    version = artifact_version(idx)
    locked = tmp_path / "locked"
    locked.mkdir()
    with monkeypatch.context() as m:
        _refuse_writes(m, locked, 13)  # EACCES: a directory the user may not write
        res = cli("encode", corpus, "-m", tiny_bert_dir, "-o", locked / "emb")
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)  # handled, not a traceback
    assert res.stderr == f"simkit: error: {locked / '.emb.lock'}: cannot create the lock file (permission denied)\n"
    assert os.listdir(locked) == []

    before = _tree(tmp_path / "ro")
    with monkeypatch.context() as m:
        _refuse_writes(m, tmp_path / "ro", 30)  # EROFS: the index lives on a read-only mount
        loaded = load_index(idx)  # readers need no lock and write nothing
        assert len(loaded) == 10 and loaded.search(X[3], top_k=1)[0]["id"] == "d3"
        with pytest.raises(InputError, match=r"idx\.lock: cannot create the lock file \(read-only file system\)"):
            _save(X, ids, idx, 20)
        res = cli("index", "info", idx)
        assert res.exit_code == 0, res.output
    assert _tree(tmp_path / "ro") == before  # nothing was written, moved or removed
    assert artifact_version(idx) == version and len(load_index(idx)) == 10

    with monkeypatch.context() as m:
        _refuse_writes(m, corpus, 13, reads=True)  # a corpus the user may not read
        res = cli("encode", corpus, "-m", tiny_bert_dir, "-o", tmp_path / "emb")
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert res.stderr == f"simkit: error: {corpus}: cannot read (permission denied)\n"
    assert not (tmp_path / "emb").exists()


# -- numbers -----------------------------------------------------------------------------------
def test_whitening_refuses_overflowing_rows_and_normalize_scales():
    X = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    X[7, 2] = 1e38
    with pytest.raises(InputError, match="row 7 is too large"):
        Whitening().fit(X)
    with pytest.raises(InputError, match="row 7"):
        Whitening().partial_fit(X)
    big = np.array([[3e30, 4e30], [0, 0], [1e38, 1e38]], np.float32)
    out = Normalize().fit(big).transform(big)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0, 0], [2**-0.5, 2**-0.5]], rtol=1e-6)


def test_empty_and_bad_search_knobs(data):
    X, ids = data
    with pytest.raises(InputError, match="dimension 0"):
        VectorIndex().add([])
    with pytest.raises(InputError, match="dimension 0"):
        LSHIndex().add([])
    hnsw = VectorIndex(preset="hnsw").add(X, ids)
    for bad in (0, -1):
        with pytest.raises(InputError, match=f"efSearch={bad}"):
            hnsw.search(X[0], efSearch=bad)
    ivf = VectorIndex("IVF2,Flat").add(X, ids)
    for bad in (0, -3):
        with pytest.raises(InputError, match=f"nprobe={bad}"):
            ivf.search(X[0], nprobe=bad)
    with pytest.raises(InputError, match="nprobe=0"):
        VectorIndex("IVF2,Flat", nprobe=0).add(X, ids)
    lsh = LSHIndex(nbits=16).add(X, ids)
    with pytest.raises(InputError, match="rerank=-1"):
        lsh.search(X[0], rerank=-1)
    with pytest.raises(InputError, match="rerank=-1"):
        LSHIndex(rerank=-1).add(X, ids)


def test_errors_are_simkit_errors():
    assert issubclass(FormatError, SimkitError) and issubclass(InputError, SimkitError)


def test_write_failures_of_faiss_and_sqlite_are_one_line(tmp_path, data, monkeypatch):
    import faiss

    X, ids = data

    def full(index, name):
        raise RuntimeError(f"Error in write_index: write error in {name}: 1 != 2 (No space left on device)")

    monkeypatch.setattr(faiss, "write_index", full)
    with pytest.raises(InputError, match=r"index.faiss: cannot write the FAISS index \(No space left on device\)"):
        _save(X, ids, tmp_path / "idx")
    monkeypatch.undo()
    assert not (tmp_path / "idx").exists() and not list(tmp_path.glob(".idx.tmp-*"))
    idx = VectorIndex(preset="flat").add(X, ids)
    import simkit.index.store as store_module

    def no_disk(*a, **k):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store_module.sqlite3, "connect", no_disk)
    with pytest.raises(InputError, match=r"store.sqlite: cannot write the id/text store \(database or disk is full\)"):
        idx.save(tmp_path / "idx")
