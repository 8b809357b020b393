"""Atomic writes: a saved artifact is either complete under its final name or absent.

Every artifact (model, embeddings, index, transform) is a directory. It is written to a
hidden sibling ``.NAME.tmp-XXXX`` and renamed into place only when complete, so a crash
never leaves a complete-looking output, and an existing directory is only replaced when the
caller allows it (``overwrite=True``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import FormatError, InputError


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``final`` when the block exits cleanly.

    >>> with atomic_dir("out") as tmp:          # doctest: +SKIP
    ...     (tmp / "config.json").write_text("{}")
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise InputError(f"{final} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if final.exists() and not final.is_dir():
        raise InputError(f"{final} exists and is not a directory; refusing to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); the result is a normal directory
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for f in tmp.rglob("*"):  # some writers (safetensors) create private 0600 files
        if f.is_file():
            f.chmod(0o666 & ~umask)
    old = None
    if final.exists():
        # Move the old one aside first so that at every instant one complete version exists.
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / "d")
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(file: str | os.PathLike) -> Any:
    """Parse a JSON file; broken JSON or bad UTF-8 is a :class:`FormatError` naming the file."""
    try:
        return json.loads(Path(file).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{file}: not valid JSON ({e})") from None


def read_config(
    path: str | os.PathLike, kind: str, max_version: int, filename: str = "config.json"
) -> dict:
    """Read and check an artifact's versioned config: ``{"format": kind, "format_version": n}``.

    Refuses a missing file, broken JSON, another kind of artifact and a newer version, each
    with an error naming the file.
    """
    file = Path(path) / filename
    if not file.is_file():
        raise FormatError(f"{file}: not found; {path} is not a simkit {kind} directory")
    cfg = read_json(file)
    if not isinstance(cfg, dict) or cfg.get("format") != kind:
        found = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise FormatError(f"{file}: expected format {kind!r}, found {found!r}")
    version = cfg.get("format_version")
    if not isinstance(version, int) or version < 1 or version > max_version:
        raise FormatError(
            f"{file}: format_version {version!r} is not supported by this simkit "
            f"(supports 1..{max_version}); upgrade simkit to read it"
        )
    return cfg
