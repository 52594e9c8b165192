"""Numba's default thread count: a fair share of the cores per MPI rank on the node."""

from __future__ import annotations

import os

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
