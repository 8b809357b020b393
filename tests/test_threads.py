"""Threads are decided in one place, from the CPUs this process may use."""

from __future__ import annotations

import pytest

from simkit import threads
from simkit.errors import InputError


def test_affinity_and_quota_limit_the_default(monkeypatch):
    monkeypatch.delenv("SIMKIT_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.default_num_threads() == 4
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)   # cpu.max "150000 100000"
    assert threads.default_num_threads() == 1
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 0.2)   # a fraction of a CPU is still one thread
    assert threads.available_cpus() == 1
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {3})
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 8.0)
    assert threads.default_num_threads() == 1


def test_env_overrides_and_is_checked(monkeypatch):
    monkeypatch.setenv("SIMKIT_NUM_THREADS", "3")
    assert threads.default_num_threads() == 3
    monkeypatch.setenv("SIMKIT_NUM_THREADS", "zero")
    with pytest.raises(InputError, match="SIMKIT_NUM_THREADS='zero'"):
        threads.default_num_threads()


def test_configure_sets_torch(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(InputError):
        threads.configure_threads(0)
    # 100000 threads crashed the process inside OpenBLAS (pthread_create failed, then SIGSEGV)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    with pytest.raises(InputError, match=r"num_threads=100000; expected 1\.\.8 \(this machine has 2 logical"):
        threads.configure_threads(100000)
    assert threads.max_threads() == 8


def test_map_streams_runs_items_side_by_side_in_order_and_restores_threads():
    import threading
    import time

    import torch

    before = torch.get_num_threads()
    seen = []

    def fn(x):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        time.sleep(0.02)  # long enough that both streams take items
        return x * x

    assert list(threads.map_streams(fn, list(range(8)), num_streams=2, threads_per_stream=1)) == [
        x * x for x in range(8)]
    names = {name for name, _ in seen}
    assert len(names) == 2 and all(n.startswith("simkit-stream") for n in names)
    assert {n for _, n in seen} == {1}
    assert torch.get_num_threads() == before
    later = []  # a thread started afterwards gets the caller's count, not the streams'
    t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert later == [before]
    seen.clear()
    assert list(threads.map_streams(fn, [3], num_streams=2)) == [9]
    assert seen == [(threading.current_thread().name, before)]  # one item: no thread


def test_map_streams_stops_at_the_first_error():
    import time

    ran = []

    def fn(x):
        if x == 0:
            raise ValueError("bad item 0")
        time.sleep(0.02)
        ran.append(x)
        return x

    with pytest.raises(ValueError, match="bad item 0"):
        list(threads.map_streams(fn, list(range(100)), num_streams=2))
    assert len(ran) < 50  # the rest were cancelled, not run


def test_map_streams_leaves_threads_started_meanwhile_alone():
    """Threads that first touch torch while streams run, or after an overlapping call that
    started on a fresh thread, get the caller's count, not the streams' one."""
    import threading

    import torch

    before = torch.get_num_threads()
    if before < 2:
        pytest.skip("needs a default of 2+ torch threads to tell the counts apart")

    def count_in_new_thread() -> int:
        out = []
        t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
        t.start()
        t.join()
        return out[0]

    during = []

    def fn(x):
        if x == 0:
            during.append(count_in_new_thread())
        return x

    assert list(threads.map_streams(fn, list(range(6)), num_streams=2)) == list(range(6))
    assert during == [before] and count_in_new_thread() == before

    inner_done = threading.Event()
    outer_go = threading.Event()

    def outer(x):  # the first call is still running while the second starts and ends
        if x == 0:
            outer_go.wait(30)
        return x

    def second_call():
        list(threads.map_streams(lambda x: x, list(range(4)), num_streams=2))
        inner_done.set()

    def first_call():
        list(threads.map_streams(outer, list(range(4)), num_streams=2))

    a = threading.Thread(target=first_call)
    a.start()
    b = threading.Thread(target=second_call)  # a fresh thread: its first torch call is inside
    b.start()
    assert inner_done.wait(30)
    outer_go.set()
    a.join(30)
    b.join(30)
    assert count_in_new_thread() == before and torch.get_num_threads() == before
