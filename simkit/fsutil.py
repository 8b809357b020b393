"""Artifacts that survive crashes and concurrent use: versions, one atomic switch, a lock.

Every artifact (embeddings, index, transform, model, eval run) is a directory. Indexes,
embedding stores and transforms (anything written with ``atomic_dir(..., versioned=True)``,
the default) are *versioned*::

    idx/CURRENT              "v-000007-1f2e3d4c\\n": the one pointer, switched by os.replace
    idx/v-000007-1f2e3d4c/   the current version's files (config.json, store.sqlite, ...)
    idx/v-000006-9a8b7c6d/   the previous version, kept for readers that just read CURRENT
    .idx.lock                (beside idx) the writers' lock file (fcntl.flock)

A writer takes the lock, writes a new version under ``idx/.tmp-v-...``, renames it to
``idx/v-...`` and switches ``CURRENT`` with a single ``os.replace``, so a crash at any
instant leaves the old or the new version loadable under the final name. The next
successful write removes leftovers (temporaries, versions older than the previous one).
Readers call :func:`resolve_version` once and open every file of that one version
(:func:`load_versioned` retries when a concurrent writer removed it meanwhile).

Artifacts written before versioning (files directly in the directory, no ``CURRENT``) still
load, and a versioned write over one works: the new version is added beside the old files,
which stay as the previous version until the next write removes them.

Model directories and eval runs stay *unversioned* (Hugging Face-style tools and people
expect the files directly inside): they are replaced by one ``renameat2(RENAME_EXCHANGE)``
of the complete new directory with the old one (Linux), so the name never points to nothing.

``overwrite=True`` only replaces an empty directory or a simkit artifact of the expected
``kind`` (its ``config.json`` / ``manifest.json`` ``format``); anything else is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .errors import FormatError, InputError, SimkitError

POINTER = "CURRENT"
VERSION_RE = re.compile(r"v-(\d{6,})-([0-9a-f]{8})")
DEFAULT_LOCK_TIMEOUT = 60.0  # seconds a writer waits for another; $SIMKIT_LOCK_TIMEOUT overrides
# Superseded versions younger than this are kept (besides the previous one, always kept), so
# a reader that resolved a version has time to open its files even under rapid rewrites.
GRACE_SECONDS = 10.0
GRACE_MAX_VERSIONS = 8  # ... but at most this many of them (rapid small writes)
_CONFIGS = ("config.json", "manifest.json")  # where an artifact names its format
T = TypeVar("T")


# --------------------------------------------------------------------------- errors
def os_error(e: OSError, path: str | os.PathLike | None = None, doing: str = "write") -> InputError:
    """A one-line :class:`InputError` for an OSError (disk full, read-only, no permission...)."""
    where = path if path is not None else (e.filename or "?")
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted", errno.ENOTDIR: "a part of the path is not a directory",
              errno.ENAMETOOLONG: "file name too long", errno.ENOENT: "no such file or directory",
              }.get(e.errno or -1, e.strerror or str(e))
    return InputError(f"{where}: cannot {doing} ({reason})")


def check_free_space(path: str | os.PathLike, nbytes: int) -> None:
    """Refuse (InputError naming ``path``) when its file system has less than ``nbytes`` free.

    Call this before writing a memory-mapped file: a full disk turns a write into a page
    fault into SIGBUS, which no ``try`` can catch.
    """
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return  # no statvfs (Windows) or unreadable: the write itself will report
    free = st.f_bavail * st.f_frsize
    if free < nbytes:
        raise InputError(f"{path}: not enough free space: need {nbytes / 2**20:.1f} MiB, "
                         f"the file system has {free / 2**20:.1f} MiB free")


def reserve_space(file: str | os.PathLike) -> None:
    """Allocate the blocks of ``file`` (a freshly created memmap) now, or refuse naming it.

    Writing through a memmap into a sparse file on a full disk is a SIGBUS, which no ``try``
    can catch; ``posix_fallocate`` turns it into ENOSPC up front. Where the file system cannot
    preallocate, the free space is checked instead.
    """
    size = os.path.getsize(file)
    try:
        fd = os.open(file, os.O_RDWR)
    except OSError as e:
        raise os_error(e, file) from None
    try:
        os.posix_fallocate(fd, 0, size)
    except AttributeError:  # no posix_fallocate (macOS, Windows)
        check_free_space(os.path.dirname(os.path.abspath(file)), size)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
            check_free_space(os.path.dirname(os.path.abspath(file)), size)
        elif e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(f"{file}: not enough free space for {size / 2**20:.1f} MiB") from None
        else:
            raise os_error(e, file) from None
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- versions
def resolve_version(path: str | os.PathLike) -> Path:
    """The directory holding the current version's files (for the legacy layout, ``path``).

    Read it once per load and open every file from the returned directory.
    """
    path = Path(path)
    name = _read_pointer(path)
    return path if name is None else path / name


def _read_pointer(path: Path) -> str | None:
    ptr = path / POINTER
    try:
        raw = ptr.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise os_error(e, ptr, "read") from None
    name = raw.decode("ascii", "replace").strip()
    if not VERSION_RE.fullmatch(name):
        raise FormatError(f"{ptr}: names {name[:80]!r}, not a version (expected v-NNNNNN-xxxxxxxx)")
    return name


def artifact_version(path: str | os.PathLike) -> str | None:
    """A cheap token that changes whenever a new version is switched in; None if absent.

    A long-lived reader polls it and reloads when it changes (hot reload).
    """
    path = Path(path)
    try:
        name = _read_pointer(path)
    except SimkitError:
        return None
    if name is not None:
        return name
    try:  # legacy layout: the whole directory was replaced by a rename on each write
        st = os.stat(path)
    except OSError:
        return None
    return f"legacy-{st.st_dev}-{st.st_ino}-{st.st_mtime_ns}"


def load_versioned(path: str | os.PathLike, load: Callable[[Path], T], attempts: int = 5) -> T:
    """``load(resolve_version(path))``, again with the new version if a writer switched meanwhile.

    A reader can lose the race with a writer that removes the version it resolved (after two
    newer versions and the grace period); it then re-reads the pointer and retries.
    """
    for attempt in range(attempts):
        token = artifact_version(path)
        try:
            return load(resolve_version(path))
        except (SimkitError, OSError):
            if attempt == attempts - 1 or artifact_version(path) == token:
                raise
    raise AssertionError("unreachable")


def artifact_status(path: str | os.PathLike) -> dict:
    """Layout, current version and leftovers of an artifact directory (for ``index info``)."""
    path = Path(path)
    name = _read_pointer(path)
    versions, temporaries, legacy = [], [], []
    for entry in sorted(os.listdir(path)):
        if VERSION_RE.fullmatch(entry):
            versions.append(entry)
        elif entry.startswith((".tmp-", f".{POINTER}.tmp")):
            temporaries.append(entry)
        elif entry != POINTER and name is not None:
            legacy.append(entry)
    siblings = sorted(p.name for p in path.parent.glob(f".{path.name}.*")
                      if p.name.startswith((f".{path.name}.tmp-", f".{path.name}.old-")))
    return {"layout": "versioned" if name else "legacy", "version": name or artifact_version(path),
            "versions": versions, "leftovers": [*temporaries, *legacy, *(f"../{s}" for s in siblings)]}


# --------------------------------------------------------------------------- locking
_LOCKS: dict[str, list] = {}  # lock file -> [RLock, fd, depth]
_LOCKS_GUARD = threading.Lock()


def lock_path(path: str | os.PathLike) -> Path:
    """The writers' lock file of an artifact: ``.NAME.lock`` beside it (it outlives versions)."""
    p = Path(os.path.abspath(path))
    return Path(os.path.realpath(p.parent)) / f".{p.name}.lock"


def lock_timeout(timeout: float | None = None) -> float:
    """``timeout``, else ``$SIMKIT_LOCK_TIMEOUT``, else :data:`DEFAULT_LOCK_TIMEOUT` seconds."""
    if timeout is not None:
        return float(timeout)
    try:
        return float(os.environ.get("SIMKIT_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT))
    except ValueError:
        raise InputError(f"SIMKIT_LOCK_TIMEOUT={os.environ['SIMKIT_LOCK_TIMEOUT']!r}; expected seconds") from None


@contextlib.contextmanager
def artifact_lock(path: str | os.PathLike, timeout: float | None = None) -> Iterator[Path]:
    """Hold the exclusive writer lock of the artifact at ``path`` (``fcntl.flock``).

    Re-entrant within one process (and thread), so :func:`atomic_dir` can take it inside a
    read-modify-write that already holds it. Another process (or thread) waits up to
    ``timeout`` seconds (default: :func:`lock_timeout`), then gets an :class:`InputError`
    naming the artifact and saying another writer holds it.
    """
    timeout = lock_timeout(timeout)
    lf = lock_path(path)
    with _LOCKS_GUARD:
        entry = _LOCKS.setdefault(str(lf), [threading.RLock(), None, 0])
    deadline = time.monotonic() + max(0.0, timeout)
    if not entry[0].acquire(timeout=max(0.0, timeout)):
        raise _busy(path, lf, timeout)
    try:
        if entry[2] == 0:
            entry[1] = _flock(path, lf, deadline, timeout)
        entry[2] += 1
        try:
            yield lf
        finally:
            entry[2] -= 1
            if entry[2] == 0 and entry[1] is not None:
                os.close(entry[1])  # closing releases the flock
                entry[1] = None
    finally:
        entry[0].release()


def _busy(path, lf: Path, timeout: float) -> InputError:
    return InputError(f"{path}: another writer holds the lock {lf} (waited {timeout:g} s); "
                      "try again when it has finished")


def _flock(path, lf: Path, deadline: float, timeout: float) -> int | None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no inter-process lock
        return None
    ancestor = lf.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{path}: cannot create it: {ancestor} is not a directory")
    try:
        lf.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lf, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise os_error(e, lf, "create the lock file") from None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise _busy(path, lf, timeout) from None
            time.sleep(0.02)
        except OSError as e:
            os.close(fd)
            raise os_error(e, lf, "lock") from None


# --------------------------------------------------------------------------- writing
@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False, kind: str | None = None,
               versioned: bool = True, timeout: float | None = None) -> Iterator[Path]:
    """Yield an empty directory; when the block exits cleanly it becomes ``final``'s content.

    Holds :func:`artifact_lock` for the whole block. ``kind`` is the ``format`` an existing
    artifact must have to be replaced (``overwrite=True``); a non-artifact directory or
    another kind is refused, naming the file. ``versioned=False`` (models, eval runs) swaps
    the whole directory instead (see the module docstring).

    >>> with atomic_dir("out", kind="simkit-index") as tmp:          # doctest: +SKIP
    ...     (tmp / "config.json").write_text("{}")
    """
    final = Path(final)
    with artifact_lock(final, timeout=timeout):
        exists = os.path.lexists(final)
        if exists and not overwrite:
            raise InputError(f"{final} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
        if exists:
            check_replaceable(final, kind)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(e, final.parent, "create the directory") from None
        if exists and versioned:
            cm = _new_version(final)
        else:
            cm = _new_dir(final, exists, versioned)
        with cm as tmp:
            try:
                yield tmp
            except InputError as e:  # name the output the user gave, not the temporary directory
                if str(tmp) not in str(e):
                    raise
                raise InputError(str(e).replace(str(tmp), str(final))) from None


def check_replaceable(final: Path, kind: str | None) -> None:
    """Refuse to replace anything but an empty dir or a simkit artifact of ``kind``."""
    if not final.is_dir():
        raise InputError(f"{final} exists and is not a directory; refusing to replace it")
    try:
        if not any(os.scandir(final)):
            return
        vdir = resolve_version(final)
    except OSError as e:
        raise os_error(e, final, "read") from None
    except FormatError as e:
        raise InputError(f"{e}; refusing to replace {final}") from None
    for name in _CONFIGS:
        f = vdir / name
        if f.is_file():
            try:
                fmt = read_json(f).get("format")
            except (FormatError, AttributeError, OSError):
                fmt = None
            if isinstance(fmt, str) and fmt.startswith("simkit") and kind in (None, fmt):
                return
            want = f"a {kind!r} artifact" if kind else "a simkit artifact"
            raise InputError(f"{f}: format {fmt!r}; {final} is not {want}, refusing to replace it "
                             "(remove it yourself or choose another output)")
    raise InputError(f"{vdir / _CONFIGS[0]}: not found; {final} is not a simkit artifact, "
                     "refusing to replace it (remove it yourself or choose another output)")


def _version_number(name: str) -> int:
    m = VERSION_RE.fullmatch(name.removeprefix(".tmp-"))
    return int(m.group(1)) if m else 0


@contextlib.contextmanager
def _new_version(final: Path) -> Iterator[Path]:
    """A new version inside an existing artifact directory, switched in by CURRENT."""
    previous = _read_pointer(final)
    try:
        number = max([_version_number(e) for e in os.listdir(final)] + [0]) + 1
        name = f"v-{number:06d}-{secrets.token_hex(4)}"
        tmp = final / f".tmp-{name}"
        tmp.mkdir()
    except OSError as e:
        raise os_error(e, final, "write a new version in") from None
    try:
        yield tmp
        _finish(tmp)
        rename(tmp, final / name)
        write_pointer(final, name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    cleanup(final, keep={name, previous})


@contextlib.contextmanager
def _new_dir(final: Path, exists: bool, versioned: bool) -> Iterator[Path]:
    """A complete directory built beside ``final`` and renamed / exchanged into place."""
    try:
        root = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as e:
        raise os_error(e, final.parent, "write in") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        root.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); the result is a normal directory
        tmp = root
        if versioned:
            name = f"v-{1:06d}-{secrets.token_hex(4)}"
            tmp = root / name
            tmp.mkdir()
        yield tmp
        _finish(tmp)
        if versioned:
            write_pointer(root, name)
        if not exists:
            rename(root, final)
        elif not exchange(root, final):
            # No renameat2 (not Linux): move the old one aside, then the new one in; a crash
            # in between leaves both as hidden siblings (reported by artifact_status).
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            rename(final, old / "d")
            rename(root, final)
            root = old
    except OSError as e:
        shutil.rmtree(root, ignore_errors=True)
        raise os_error(e, final) from None
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    shutil.rmtree(root, ignore_errors=True)  # after an exchange: the old version
    _clean_siblings(final)


def _finish(tmp: Path) -> None:
    """Normal permissions (some writers make 0600 files) and data on disk before the switch."""
    umask = os.umask(0)
    os.umask(umask)
    for f in tmp.rglob("*"):
        if f.is_file():
            f.chmod(0o666 & ~umask)
            _fsync(f)
    _fsync(tmp)


def _fsync(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # directories on some file systems
    finally:
        os.close(fd)


def rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)


def write_pointer(final: Path, name: str) -> None:
    """Switch ``final/CURRENT`` to ``name`` with one ``os.replace`` (the commit point)."""
    tmp = final / f".{POINTER}.tmp-{secrets.token_hex(4)}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final / POINTER)
    _fsync(final)


_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with ``renameat2(RENAME_EXCHANGE)``; False if unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False  # kernel or file system without exchange
    raise OSError(err, os.strerror(err), str(b))


def cleanup(final: Path, keep: set) -> None:
    """Remove what no reader needs: temporaries, and versions other than ``keep`` and recent ones.

    Called with the lock held, so every temporary is a crashed writer's.
    """
    now = time.time()
    legacy = None in keep  # the previous "version" was the legacy layout: keep its files
    entries = sorted(os.scandir(final), key=lambda e: -_version_number(e.name))  # newest first
    young = 0
    for entry in entries:
        name = entry.name
        if name == POINTER or name in keep:
            continue
        try:
            if VERSION_RE.fullmatch(name):
                if now - entry.stat().st_mtime < GRACE_SECONDS and young < GRACE_MAX_VERSIONS:
                    young += 1
                    continue
            elif not name.startswith((".tmp-", f".{POINTER}.tmp")) and legacy:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            pass  # best effort; reported by artifact_status
    _clean_siblings(final)


def _clean_siblings(final: Path) -> None:
    """Temporaries of crashed writers (and of older releases) beside ``final``."""
    for p in final.parent.glob(f".{final.name}.*"):
        if p.name.startswith((f".{final.name}.tmp-", f".{final.name}.old-")):
            shutil.rmtree(p, ignore_errors=True)


# --------------------------------------------------------------------------- JSON
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FormatError(f"{file}: not valid JSON ({e})") from None
    except IsADirectoryError:
        raise FormatError(f"{file}: is a directory, expected a JSON file") from None


def read_config(
    path: str | os.PathLike, kind: str, max_version: int, filename: str = "config.json"
) -> dict:
    """Read and check an artifact's versioned config: ``{"format": kind, "format_version": n}``.

    ``path`` is the directory holding the files (a resolved version, see
    :func:`resolve_version`). Refuses a missing file, broken JSON, another kind of artifact
    and a newer version, each with an error naming the file.
    """
    file = Path(path) / filename
    if not file.is_file():
        raise FormatError(f"{file}: not found; {path} is not a simkit {kind.removeprefix('simkit-')} directory")
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


def load_npy(file: str | os.PathLike, mmap: bool = False):
    """``np.load`` without pickles; any damage (a bad header can raise SyntaxError and the
    like from numpy's header parser) is a :class:`FormatError` naming the file."""
    import numpy as np

    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as e:  # numpy's header parser raises many types
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FormatError(f"{file}: cannot read the array (not a readable .npy file; truncated or damaged?): {reason}") from None


_MISSING = object()


def cfg_value(cfg: dict, key: str, file: str | os.PathLike, types: type | tuple,
              optional: bool = False, default: Any = None) -> Any:
    """``cfg[key]`` checked against ``types`` (None allowed when ``optional``); a missing key
    or a wrong type is a :class:`FormatError` naming the file and the key."""
    value = cfg.get(key, _MISSING)
    if value is _MISSING:
        if optional:
            return default
        raise FormatError(f"{file}: missing key {key!r}")
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        ok = False  # JSON true/false is not an int here
    else:
        ok = isinstance(value, types)
    if not ok:
        names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise FormatError(f"{file}: key {key!r} is {value!r}, expected {names}"
                          + (" or null" if optional else ""))
    return value
