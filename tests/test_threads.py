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
