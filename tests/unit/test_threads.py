"""Numba's default thread count: a fair share of the cores per MPI rank on the node."""

from __future__ import annotations

import os
import threading

import pytest
from mpicoll.kernels import threads


def test_share_of_cores_per_local_rank(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE",
                 "SLURM_TASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    assert threads._default_threads() == 8
    monkeypatch.setenv("MPI_LOCALNRANKS", "4")
    assert threads._default_threads() == 2
    monkeypatch.setenv("MPI_LOCALNRANKS", "16")
    assert threads._default_threads() == 1
    monkeypatch.delenv("MPI_LOCALNRANKS")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "2(x3),1")
    assert threads._default_threads() == 4


def test_a_rank_already_bound_to_its_cores_keeps_them(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setenv("MPI_LOCALNRANKS", "4")
    assert threads._default_threads() == 3


def test_blas_share_caps_blas_while_any_thread_is_inside_and_restores_after(monkeypatch):
    """BLAS has one process-wide setting: the first block to enter caps it, the last to leave
    restores it, whichever threads they run on (a fake controller records what is done)."""
    calls = []

    class Limiter:
        def restore_original_limits(self) -> None:
            calls.append("restore")

    class Controller:
        def limit(self, limits: int, user_api: str) -> Limiter:
            calls.append(("limit", limits, user_api))
            return Limiter()

    monkeypatch.setattr(threads, "_blas_controller", lambda: Controller())
    monkeypatch.setattr(threads, "_default_threads", lambda: 3)
    entered, release = threading.Event(), threading.Event()

    def other() -> None:
        with threads.blas_share():
            entered.set()
            release.wait(10)

    with threads.blas_share():
        worker = threading.Thread(target=other)
        worker.start()
        assert entered.wait(10)
        with threads.blas_share():  # nested in one thread too
            pass
    assert calls == [("limit", 3, "blas")]  # the other thread is still inside: nothing restored yet
    release.set()
    worker.join(10)
    assert calls == [("limit", 3, "blas"), "restore"]
    with pytest.raises(RuntimeError), threads.blas_share():
        raise RuntimeError("a failing product still restores")
    assert calls[-1] == "restore" and len(calls) == 4


def test_blas_share_leaves_a_user_setting_alone(monkeypatch):
    threads._blas_controller.cache_clear()
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    try:
        assert threads._blas_controller() is None
        with threads.blas_share():
            pass
    finally:
        threads._blas_controller.cache_clear()
