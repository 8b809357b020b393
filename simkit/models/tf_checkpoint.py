"""Read TensorFlow checkpoints (V2 tensor bundles) with numpy only: no TensorFlow, no protobuf.

A checkpoint ``PREFIX`` is ``PREFIX.index`` plus ``PREFIX.data-00000-of-0000N``. The index is
a LevelDB-format table (sorted, prefix-compressed key/value blocks, an index block and a
48-byte footer ending in a magic number); key ``""`` holds a BundleHeaderProto, every other
key is a tensor name whose value is a BundleEntryProto (dtype, shape, shard_id, offset,
size, masked crc32c). The tensor's bytes are raw little-endian at ``offset`` in its shard.
Every block and every tensor read is checked against its crc32c, so a corrupted file fails
with an error naming it.

>>> ckpt = TFCheckpoint("chinese_simbert/bert_model.ckpt")       # doctest: +SKIP
>>> ckpt.shapes()["bert/embeddings/word_embeddings"]              # (13685, 768)
>>> ckpt.read("bert/pooler/dense/kernel").dtype                   # float32
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48

# tensorflow/core/framework/types.proto
_DTYPES: dict[int, str] = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 9: "int64",
    10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64",
}

# ----------------------------------------------------------------------------- crc32c
_POLY = 0x82F63B78  # Castagnoli, reflected


def _make_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
    return t


_TABLE = _make_table()
_TABLE_L = [int(x) for x in _TABLE]


def _crc_raw_py(data: bytes, reg: int = 0) -> int:
    for b in data:
        reg = _TABLE_L[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _apply(mat: list[int], v):
    """GF(2) 32x32 matrix (32 columns) times vector(s) of uint32."""
    if isinstance(v, int):
        out = 0
        for i in range(32):
            if (v >> i) & 1:
                out ^= mat[i]
        return out
    out = np.zeros_like(v)
    for i in range(32):
        out ^= np.where((v >> np.uint32(i)) & np.uint32(1), np.uint32(mat[i]), np.uint32(0))
    return out


def _zeros_op(n: int) -> list[int]:
    """Matrix of the register update over n zero bytes (binary powering)."""
    result = [1 << i for i in range(32)]
    base = [_crc_raw_py(b"\0", 1 << i) for i in range(32)]
    while n:
        if n & 1:
            result = [_apply(base, c) for c in result]
        base = [_apply(base, c) for c in base]
        n >>= 1
    return result


def crc32c(data: bytes | memoryview | np.ndarray) -> int:
    """CRC-32C (Castagnoli) of ``data``; numpy lanes make 100 MB take about a second.

    The register update is linear over GF(2), so the data is cut into 2**p equal chunks
    processed side by side from a zero register and combined pairwise by shifting the left
    chunk's register over the right chunk's length.
    """
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = len(buf)
    lanes = 1
    while lanes * 2 * 256 <= n and lanes < 65536:
        lanes *= 2
    m = n // lanes if lanes > 1 else 0
    reg = 0
    if m:
        block = buf[: lanes * m].reshape(lanes, m)
        regs = np.zeros(lanes, dtype=np.uint32)
        for j in range(m):
            regs = _TABLE[(regs ^ block[:, j]) & np.uint32(0xFF)] ^ (regs >> np.uint32(8))
        length = m
        while len(regs) > 1:
            op = _zeros_op(length)
            regs = _apply(op, regs[0::2]) ^ regs[1::2]
            length *= 2
        reg = int(regs[0])
    tail = buf[lanes * m :].tobytes()
    reg = _apply(_zeros_op(len(tail)), reg) ^ _crc_raw_py(tail)
    init = _apply(_zeros_op(n), 0xFFFFFFFF)
    return (init ^ reg ^ 0xFFFFFFFF) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# -------------------------------------------------------------------------- protobuf
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message; value is int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            ln, pos = _varint(buf, pos)
            val, pos = buf[pos : pos + ln], pos + ln
            if len(val) != ln:
                raise ValueError("truncated field")
        elif wire == 5:
            val, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, val


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass
class TensorEntry:
    """Where one tensor lives: BundleEntryProto, decoded."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int | None = None
    sliced: bool = False


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    e = TensorEntry(name, 0, ())
    for f, _, v in _fields(buf):
        if f == 1:
            e.dtype = v
        elif f == 2:
            dims = []
            for g, _, dv in _fields(v):
                if g == 2:
                    size = 0
                    for h, _, sv in _fields(dv):
                        if h == 1:
                            size = _int64(sv)
                    dims.append(size)
            e.shape = tuple(dims)
        elif f == 3:
            e.shard_id = v
        elif f == 4:
            e.offset = v
        elif f == 5:
            e.size = v
        elif f == 6:
            e.crc32c = unmask_crc(v)
        elif f == 7:
            e.sliced = True
    return e


# ----------------------------------------------------------------------- LevelDB table
def _read_block(data: bytes, offset: int, size: int, file: Path) -> bytes:
    end = offset + size
    if end + 5 > len(data):
        raise FormatError(f"{file}: truncated (a block at byte {offset} runs past the end)")
    block, kind = data[offset:end], data[end]
    stored = struct.unpack_from("<I", data, end + 1)[0]
    if unmask_crc(stored) != crc32c(data[offset : end + 1]):
        raise FormatError(f"{file}: checksum mismatch in the block at byte {offset}; the file is corrupted")
    if kind != 0:
        raise FormatError(f"{file}: compressed index blocks (type {kind}) are not supported")
    return block


def _block_entries(block: bytes):
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * n_restarts
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + vlen]
        pos += vlen


def _read_index(file: Path) -> tuple[dict, dict[str, TensorEntry]]:
    data = file.read_bytes()
    if len(data) < _FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
        raise FormatError(f"{file}: not a TensorFlow checkpoint index (bad size or magic number)")
    footer = data[len(data) - _FOOTER :]
    try:
        _, pos = _varint(footer, 0)  # metaindex offset
        _, pos = _varint(footer, pos)  # metaindex size
        idx_off, pos = _varint(footer, pos)
        idx_size, pos = _varint(footer, pos)
        header: dict = {}
        entries: dict[str, TensorEntry] = {}
        for _, handle in _block_entries(_read_block(data, idx_off, idx_size, file)):
            off, p = _varint(handle, 0)
            size, _ = _varint(handle, p)
            for key, value in _block_entries(_read_block(data, off, size, file)):
                if key == b"":
                    header = {f: v for f, _, v in _fields(value)}
                else:
                    name = key.decode("utf-8")
                    entries[name] = _parse_entry(name, value)
    except (ValueError, struct.error, IndexError, UnicodeDecodeError) as e:
        raise FormatError(f"{file}: malformed checkpoint index ({e})") from None
    return header, entries


def resolve_prefix(path: str | os.PathLike) -> Path:
    """Checkpoint prefix from a prefix, an ``.index`` file or a directory holding one."""
    p = Path(path)
    if p.name.endswith(".index"):
        return p.with_name(p.name[: -len(".index")])
    if p.is_dir():
        state = p / "checkpoint"  # TF's pointer file: model_checkpoint_path: "NAME"
        if state.is_file():
            for line in state.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    name = line.split(":", 1)[1].strip().strip('"')
                    cand = Path(name) if os.path.isabs(name) else p / name
                    if Path(str(cand) + ".index").is_file():
                        return cand
        found = sorted(p.glob("*.index"))
        if len(found) == 1:
            return found[0].with_name(found[0].name[: -len(".index")])
        if not found:
            raise InputError(f"{p}: no TensorFlow checkpoint (*.index) in this directory")
        raise InputError(f"{p}: several checkpoints ({', '.join(f.name for f in found)}); name one")
    if Path(str(p) + ".index").is_file():
        return p
    raise InputError(f"{p}: no such checkpoint ({p}.index not found)")


class TFCheckpoint:
    """Lazy reader of a TF V2 checkpoint: names and shapes up front, tensors on demand."""

    def __init__(self, path: str | os.PathLike):
        self.prefix = resolve_prefix(path)
        self.index_file = Path(str(self.prefix) + ".index")
        header, self.entries = _read_index(self.index_file)
        self.num_shards = int(header.get(1, 1)) or 1
        if header.get(2, 0) != 0:
            raise FormatError(f"{self.index_file}: big-endian checkpoints are not supported")

    def names(self) -> list[str]:
        return sorted(self.entries)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: e.shape for k, e in sorted(self.entries.items())}

    def shard_file(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """The tensor ``name`` as a C-contiguous numpy array (bfloat16 widened to float32)."""
        e = self.entries.get(name)
        if e is None:
            raise InputError(f"{self.index_file}: no variable {name!r}")
        if e.sliced:
            raise FormatError(f"{self.index_file}: {name} is a partitioned variable; not supported")
        if e.dtype not in _DTYPES:
            raise FormatError(f"{self.index_file}: {name} has dtype code {e.dtype}, which is not numeric")
        file = self.shard_file(e.shard_id)
        if not file.is_file():
            raise FormatError(f"{file}: data shard not found (needed for {name})")
        with open(file, "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.size)
        if len(raw) != e.size:
            raise FormatError(f"{file}: truncated; {name} needs bytes {e.offset}..{e.offset + e.size}")
        if verify and e.crc32c is not None and crc32c(raw) != e.crc32c:
            raise FormatError(f"{file}: checksum mismatch for {name}; the file is corrupted")
        kind = _DTYPES[e.dtype]
        count = int(np.prod(e.shape, dtype=np.int64)) if e.shape else 1
        if kind == "bfloat16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(kind).newbyteorder("<"))
        if arr.size != count:
            raise FormatError(f"{self.index_file}: {name} has {arr.size} values but shape {e.shape}")
        return np.ascontiguousarray(arr.reshape(e.shape).astype(arr.dtype.newbyteorder("=")))
