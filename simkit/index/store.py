"""Ids, texts and metadata of an index in SQLite (standard library), beside the vectors.

FAISS knows only int64 labels. :class:`DocStore` gives every document a label (assigned in
order, never reused) and keeps ``label -> (id, text, metadata)`` in one table, with a unique
index on ``id``. Ids are all ``str`` or all ``int`` within one store. The label -> id map is
also held in memory as an array (one fancy-index per search); texts and metadata stay on
disk and are fetched only for the labels a search returns.

A store opened from a saved index is read-only on disk; the first change copies it into
memory, so the saved directory is only ever replaced by an atomic save.

>>> s = DocStore()
>>> s.add(["a", "b"], ["text a", None], [{"k": 1}, None]).tolist()
[0, 1]
>>> s.ids_of([1, 0]), s.get("a")["text"]
(['b', 'a'], 'text a')
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (label INTEGER PRIMARY KEY, id NOT NULL UNIQUE, text TEXT, metadata TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
_CHUNK = 10000  # SQLite limits the number of bound parameters per statement


class DocStore:
    """Label <-> id map plus optional text and JSON metadata per document."""

    def __init__(self, conn: sqlite3.Connection | None = None, path: Path | None = None):
        self._path = path
        self._conn = conn or sqlite3.connect(":memory:")
        self._readonly = conn is not None
        try:
            if not self._readonly:
                self._conn.executescript(SCHEMA)
            rows = self._conn.execute("SELECT label, id FROM docs ORDER BY label").fetchall()
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as e:
            raise FormatError(f"{path}: not a readable simkit id/text store ({e})") from None
        self.id_type: str | None = meta.get("id_type") or None
        self.has_payload = meta.get("has_payload") == "1"
        try:
            self.next_label = int(meta.get("next_label", 0))
        except (TypeError, ValueError):
            raise FormatError(f"{path}: next_label {meta.get('next_label')!r} is not an integer") from None
        want = {"str": str, "int": int, None: (str, int)}.get(self.id_type)
        bad = next((r for r in rows if type(r[0]) is not int or not 0 <= r[0] < self.next_label
                    or isinstance(r[1], bool) or not isinstance(r[1], want or ())), None)
        if want is None or bad is not None or self.next_label > 2**40:
            raise FormatError(f"{path}: inconsistent id/text store (id type {self.id_type!r}, "
                              f"next_label {self.next_label}, bad row {bad!r})")
        self._ids = np.empty(max(self.next_label, rows[-1][0] + 1 if rows else 0), dtype=object)
        for label, i in rows:
            self._ids[label] = i
        self._label_of: dict | None = None  # built on first use (add / remove / get)
        self.count = len(rows)

    # -- persistence ------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike) -> DocStore:
        """Open a saved store read-only (texts stay on disk)."""
        path = Path(path)
        if not path.is_file():
            raise FormatError(f"{path}: not found; the index directory is incomplete")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        return cls(conn, path)

    def save(self, path: str | os.PathLike) -> None:
        self._write_meta()
        try:
            dest = sqlite3.connect(str(path))
            try:
                self._conn.backup(dest)
            finally:
                dest.close()
        except sqlite3.Error as e:  # "database or disk is full", a read-only directory...
            raise InputError(f"{path}: cannot write the id/text store ({e})") from None

    def _write_meta(self) -> None:
        if self._readonly:
            return
        meta = {"next_label": str(self.next_label), "id_type": self.id_type or "",
                "has_payload": "1" if self.has_payload else "0"}
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())

    def _writable(self) -> None:
        """Copy a read-only store into memory before its first change."""
        if self._readonly:
            mem = sqlite3.connect(":memory:")
            self._conn.backup(mem)
            self._conn.close()
            self._conn, self._readonly = mem, False

    # -- lookups ----------------------------------------------------------------------
    def _labels(self) -> dict:
        if self._label_of is None:
            self._label_of = {i: lab for lab, i in enumerate(self._ids[: self.next_label]) if i is not None}
        return self._label_of

    def __contains__(self, doc_id) -> bool:
        return doc_id in self._labels()

    def labels_of(self, ids: Sequence) -> np.ndarray:
        """int64 labels of ``ids``; an unknown id is an error naming it."""
        lab = self._labels()
        missing = [i for i in ids if i not in lab]
        if missing:
            raise InputError(f"unknown id {missing[0]!r} ({len(missing)} of {len(ids)} ids are not in the index)")
        return np.fromiter((lab[i] for i in ids), dtype=np.int64, count=len(ids))

    def ids_of(self, labels) -> list:
        return self._ids[np.asarray(labels, dtype=np.int64)].tolist()

    def payload(self, labels) -> dict[int, tuple[str | None, Any]]:
        """``{label: (text, metadata)}`` for the given labels (one query per 10k labels)."""
        out: dict[int, tuple[str | None, Any]] = {}
        uniq = sorted({int(x) for x in labels})
        for s in range(0, len(uniq), _CHUNK):
            part = uniq[s : s + _CHUNK]
            q = f"SELECT label, text, metadata FROM docs WHERE label IN ({','.join('?' * len(part))})"
            try:
                for label, text, meta in self._conn.execute(q, part):
                    out[label] = (text, json.loads(meta) if meta is not None else None)
            except (sqlite3.DatabaseError, json.JSONDecodeError, TypeError, RecursionError) as e:
                raise FormatError(f"{self._path}: unreadable text or metadata ({e})") from None
        return out

    def get(self, doc_id) -> dict:
        """``{id, text, metadata}`` of one document, read from disk (not all texts)."""
        label = int(self.labels_of([doc_id])[0])
        text, meta = self.payload([label])[label]
        return {"id": doc_id, "text": text, "metadata": meta}

    # -- changes ----------------------------------------------------------------------
    def check_new_ids(self, ids: Sequence, allow_existing: bool = False) -> None:
        """Types consistent with the store, no duplicates in the batch, none already present."""
        for i in ids:
            if isinstance(i, (bool, np.bool_)) or not isinstance(i, (str, int, np.integer)):
                raise InputError(f"id {i!r} has type {type(i).__name__}; ids must be str or int")
        n_str = sum(isinstance(i, str) for i in ids)
        if 0 < n_str < len(ids):
            raise InputError("ids must be all str or all int, not a mix")
        kind = "str" if n_str else "int"
        if ids and self.id_type and kind != self.id_type:
            raise InputError(f"this index has {self.id_type} ids; got {kind} ids")
        seen: set = set()
        for i in ids:
            if i in seen:
                raise InputError(f"duplicate id {i!r} in the batch")
            seen.add(i)
        if not allow_existing:
            lab = self._labels()
            dup = next((i for i in ids if i in lab), None)
            if dup is not None:
                raise InputError(f"id {dup!r} is already in the index; to replace documents use upsert() "
                                 "(index add --upsert)")

    def add(self, ids: Sequence, texts: Sequence | None = None, metadata: Sequence | None = None) -> np.ndarray:
        """Store documents and return their new labels (call :meth:`check_new_ids` first)."""
        self._writable()
        ids = [int(i) if isinstance(i, np.integer) else i for i in ids]
        n = len(ids)
        labels = np.arange(self.next_label, self.next_label + n, dtype=np.int64)
        metas = [None if m is None else json.dumps(m, ensure_ascii=False) for m in (metadata or [None] * n)]
        texts = list(texts) if texts is not None else [None] * n
        for i, t in enumerate(texts):
            if t is not None and not isinstance(t, str):
                raise InputError(f"text {i} has type {type(t).__name__}; expected str or None")
        with self._conn:
            self._conn.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", zip(labels.tolist(), ids, texts, metas))
        self.has_payload = self.has_payload or any(t is not None for t in texts) or any(m is not None for m in metas)
        self.id_type = self.id_type or ("str" if ids and isinstance(ids[0], str) else "int" if ids else None)
        grown = np.empty(self.next_label + n, dtype=object)
        grown[: len(self._ids)] = self._ids[: self.next_label + n]
        grown[labels] = ids
        self._ids, self.next_label, self.count = grown, self.next_label + n, self.count + n
        lab = self._labels()
        lab.update(zip(ids, labels.tolist()))
        return labels

    def remove(self, labels: np.ndarray) -> None:
        self._writable()
        lab = self._labels()
        with self._conn:
            self._conn.executemany("DELETE FROM docs WHERE label = ?", ((int(x),) for x in labels))
        for x in labels:
            lab.pop(self._ids[x], None)
            self._ids[x] = None
        self.count -= len(labels)

    def close(self) -> None:
        self._conn.close()
