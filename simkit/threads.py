"""How many CPU threads this process may use, decided in one place.

Containers limit CPUs by affinity (``taskset``, cpusets) and by a CFS quota (cgroup v2
``cpu.max``, v1 ``cpu.cfs_quota_us``); ``os.cpu_count()`` sees neither. torch's intra-op pool
and ONNX Runtime both get the number :func:`default_num_threads` returns, unless told otherwise.

>>> default_num_threads() >= 1
True
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from .errors import InputError

T = TypeVar("T")
R = TypeVar("R")


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup quota, or None when there is none."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process may run on: affinity, capped by the cgroup quota (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def default_num_threads() -> int:
    """``$SIMKIT_NUM_THREADS`` if set, else :func:`available_cpus`."""
    env = os.environ.get("SIMKIT_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise InputError(f"SIMKIT_NUM_THREADS={env!r}; expected a positive integer")
        return n
    return available_cpus()


def max_threads() -> int:
    """The most intra-op threads simkit accepts: a few per logical CPU. Thousands of threads
    only oversubscribe the cores, and past the system's limit OpenBLAS crashes the process."""
    return max(8, 4 * (os.cpu_count() or 1))


def check_num_threads(n: int, name: str = "num_threads") -> None:
    if n < 1 or n > max_threads():
        raise InputError(f"{name}={n}; expected 1..{max_threads()} (this machine has "
                         f"{os.cpu_count()} logical CPUs)")


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``num_threads`` (default: :func:`default_num_threads`)."""
    import torch

    n = default_num_threads() if num_threads is None else int(num_threads)
    check_num_threads(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# torch's thread count is process-wide while streams start (see map_streams): one start at a time.
_STARTING = threading.Lock()


def map_streams(fn: Callable[[T], R], items: Sequence[T], num_streams: int = 1,
                threads_per_stream: int = 1) -> Iterator[R]:
    """``fn(item)`` for each item, yielded in order, with up to ``num_streams`` items in flight
    at once, each on a thread of ``threads_per_stream`` torch intra-op threads.

    On few cores a small model spends much of a forward pass in the OpenMP team's barriers
    and in per-op Python; independent streams of one thread each keep every core busy (what
    OpenVINO calls throughput streams). ``fn`` runs on the streams' threads: thread-local torch
    state (``inference_mode``, grad mode) must be set inside it.

    >>> list(map_streams(lambda x: x * x, [1, 2, 3], num_streams=2))
    [1, 4, 9]
    """
    if num_streams <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    import torch

    n = min(num_streams, len(items))
    started = threading.Barrier(n + 1)

    def start() -> None:
        # torch.set_num_threads sets this thread's OpenMP team size and the process-wide count
        # a thread copies on its first torch call; make that first call now, with this count.
        torch.set_num_threads(threads_per_stream)
        torch.get_num_threads()
        started.wait()

    pool = ThreadPoolExecutor(n, initializer=start, thread_name_prefix="simkit-stream")
    try:
        with _STARTING:
            caller = torch.get_num_threads()
            try:
                # Submits every item: each of the n threads is started (none is idle before
                # the barrier lets them go), and all have set their count before the restore.
                results = pool.map(fn, items)
                started.wait(timeout=60)
            except BaseException:
                started.abort()  # let the streams that did start go (their start fails)
                raise
            finally:
                torch.set_num_threads(caller)  # for this thread and for threads started later
        yield from results  # on an error or an early stop, cancels the rest
    finally:
        pool.shutdown(wait=True)
