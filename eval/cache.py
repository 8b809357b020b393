"""Embedding cache: each distinct sentence is encoded once per (model, max_seq_length).

>>> cache = EmbeddingCache("~/.cache/simkit/eval")                     # or None: memory only
>>> vecs = cache.get_or_encode(enc, texts, ["cls", "last-avg"], max_seq_length=64)
>>> vecs["cls"].shape                                                 # (len(texts), d)
>>> cache.n_encoded_, cache.n_hits_                                   # texts encoded / served

Entries are keyed by (model fingerprint, max_seq_length, pooling) and the BLAKE2b digest of
the text. Missing texts are encoded in ONE forward pass for all the requested poolings
(``Encoder.encode_poolings``), so a grid of poolings costs one encoding pass.

On disk: ``ROOT/<fingerprint>/len-<L>/<pooling>/<shard>.npy`` (float32 rows, memory-mapped
when read) next to ``<shard>.keys.npy`` (16-byte digests, written last: a shard without its
keys file is an interrupted write and is ignored). Shards are append-only and named by their
content, so two runs sharing a cache never overwrite each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from simkit.errors import FormatError

KEY_SIZE = 16  # digest bytes; stored as uint8 (n, 16): numpy "S16" would drop trailing NULs


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_SIZE).digest()


def model_fingerprint(encoder) -> str:
    """Hash of what decides a vector: weights, vocabulary, pre-tokenisation, dtype, device type."""
    import torch

    h = hashlib.blake2b(digest_size=12)
    for name, t in sorted(encoder.model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    vocab = sorted(encoder.tokenizer.hf.get_vocab().items())
    h.update(json.dumps([vocab, encoder.tokenizer.pre_tokenize, encoder.dtype,
                         encoder.device.type], ensure_ascii=False).encode())
    return h.hexdigest()


class _Shelf:
    """The shards of one (model, max_len, pooling): digest -> (shard, row)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.index: dict[bytes, tuple[int, int]] = {}
        self.arrays: list[np.ndarray] = []
        if folder is not None and folder.is_dir():
            for keys_file in sorted(folder.glob("*.keys.npy")):
                vec_file = keys_file.with_name(keys_file.name[: -len(".keys.npy")] + ".npy")
                try:
                    keys = np.load(keys_file, allow_pickle=False)
                    vecs = np.load(vec_file, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError, EOFError) as e:
                    raise FormatError(f"{vec_file}: unreadable cache shard ({e}); delete {folder}") from None
                if keys.dtype != np.uint8 or keys.shape[1:] != (KEY_SIZE,) or vecs.ndim != 2 or len(keys) != len(vecs):
                    raise FormatError(f"{vec_file}: inconsistent cache shard; delete {folder}")
                self._add(keys, vecs)

    def _add(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        s = len(self.arrays)
        self.arrays.append(vecs)
        raw = keys.tobytes()
        for row in range(len(keys)):
            self.index.setdefault(raw[row * KEY_SIZE : (row + 1) * KEY_SIZE], (s, row))

    def put(self, keys: list[bytes], vecs: np.ndarray) -> None:
        keys_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, KEY_SIZE)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = hashlib.blake2b(keys_arr.tobytes(), digest_size=10).hexdigest()
            vec_file, keys_file = self.folder / f"{name}.npy", self.folder / f"{name}.keys.npy"
            for file, arr in ((vec_file, vecs), (keys_file, keys_arr)):  # keys last: commit marker
                tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
                with open(tmp, "wb") as f:
                    np.save(f, arr, allow_pickle=False)
                os.replace(tmp, file)
            vecs = np.load(vec_file, mmap_mode="r")
        self._add(keys_arr, vecs)

    def gather(self, keys: list[bytes], out: np.ndarray) -> None:
        """Fill ``out[i]`` with the vector of ``keys[i]``, one fancy-index per shard."""
        loc = np.array([self.index[k] for k in keys], dtype=np.int64).reshape(-1, 2)
        for s in np.unique(loc[:, 0]):
            sel = np.flatnonzero(loc[:, 0] == s)
            out[sel] = self.arrays[s][loc[sel, 1]]


class EmbeddingCache:
    """See the module doc. ``path=None`` keeps everything in memory (one run)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = None if path is None else Path(path).expanduser()
        self._shelves: dict[tuple[str, int, str], _Shelf] = {}
        self._fingerprints: dict[int, str] = {}
        self.n_encoded_ = 0  # texts sent through the model
        self.n_hits_ = 0  # (text, pooling) requests served from the cache
        self.n_passes_ = 0  # encode_poolings calls

    def fingerprint(self, encoder) -> str:
        key = id(encoder.model)
        if key not in self._fingerprints:
            self._fingerprints[key] = model_fingerprint(encoder)
            if self.path is not None:
                folder = self.path / self._fingerprints[key]
                folder.mkdir(parents=True, exist_ok=True)
                info = folder / "model.json"
                if not info.exists():
                    info.write_text(json.dumps(encoder.model_card, ensure_ascii=False, indent=2) + "\n",
                                    encoding="utf-8")
        return self._fingerprints[key]

    def _shelf(self, fp: str, max_len: int, pooling: str) -> _Shelf:
        k = (fp, max_len, pooling)
        if k not in self._shelves:
            folder = None if self.path is None else self.path / fp / f"len-{max_len}" / pooling
            self._shelves[k] = _Shelf(folder)
        return self._shelves[k]

    def get_or_encode(
        self,
        encoder,
        texts: Sequence[str],
        poolings: Sequence[str],
        max_seq_length: int,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """``{pooling: (len(texts), d) float32}``; only the missing texts go through the model.

        Returns the number of truncated texts among those encoded in ``self.last_truncated_``.
        """
        fp = self.fingerprint(encoder)
        keys = [text_key(t) for t in texts]
        shelves = {p: self._shelf(fp, int(max_seq_length), p) for p in poolings}
        first: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        missing = [k for k in first if any(k not in s.index for s in shelves.values())]
        self.n_hits_ += sum(k in s.index for s in shelves.values() for k in first)
        self.last_truncated_ = 0
        if missing:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # truncation is counted and reported instead
                vecs = encoder.encode_poolings(
                    [texts[first[k]] for k in missing], list(poolings), batch_size=batch_size,
                    show_progress_bar=show_progress_bar, max_seq_length=int(max_seq_length),
                )
            self.last_truncated_ = int(encoder.last_encode_info_.get("truncated", 0))
            self.n_passes_ += 1
            self.n_encoded_ += len(missing)
            for p, shelf in shelves.items():
                rows = [j for j, k in enumerate(missing) if k not in shelf.index]
                if rows:
                    shelf.put([missing[j] for j in rows], vecs[p][rows])
        dim = encoder.get_sentence_embedding_dimension()
        out = {}
        for p, shelf in shelves.items():
            out[p] = np.empty((len(texts), dim), dtype=np.float32)
            shelf.gather(keys, out[p])
        return out
