"""Host staging under real MPI: every algorithm with every message staged through pinned buffers.

CuPy cannot run here, so host arrays play the device arrays: the staging hooks are pointed at a
stand-in device (tests/helpers/staging_fake.py) that checks the staging contract, and every byte every
algorithm sends or receives goes through staged requests and the pinned-buffer pool. Results must
be bitwise those of MPI's own collectives, and a repeated call must allocate no new host buffer.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import all_inputs, assert_all, assert_equal_all, mpi_allreduce, rank_input
from staging_fake import FakeDevice

import mpicoll
from mpicoll.collectives import native
from mpicoll.collectives.partition import displacements, even_counts
from mpicoll.transport import p2p
from mpicoll.transport.staging import Stager


@pytest.fixture(autouse=True)
def staged(monkeypatch):
    """Stage every non-empty host buffer through the stand-in device; yield the stagers made."""
    stagers: dict[int, Stager] = {}

    def stager_of(c):
        return stagers.setdefault(id(c), Stager(FakeDevice()))

    def needs(buf):
        return buf is not None and isinstance(buf, np.ndarray)

    for module in (p2p, native):
        monkeypatch.setattr(module, "needs_staging", needs)
        monkeypatch.setattr(module, "stager_of", stager_of)
    with mpicoll.config.override(segment_bytes=4096):
        yield stagers


ALGORITHMS = ["ring", "tree", "recursive_doubling", "rabenseifner", "native"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_staged_allreduce_matches_mpi_bitwise(comm, algorithm, staged):
    for count, dtype in [(1, "int64"), (1001, "int32"), (100003, "int64"), (5000, "float16")]:
        x = rank_input(count, comm.rank, dtype)
        want = mpi_allreduce(comm.mpi, x, "sum")
        assert_equal_all(comm.mpi, mpicoll.allreduce(x, algorithm=algorithm, comm=comm), want, f"{count} {dtype}")
    stager = next(iter(staged.values()), None)
    device = None if stager is None else stager.device
    used = comm.size == 1 or (device is not None and device.to_host_calls > 0 and device.to_device_calls > 0)
    assert_all(comm.mpi, used, "messages went through the stager")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_staged_in_place(comm, algorithm):
    for count in (1, 3001):
        x = rank_input(count, comm.rank, "int64")
        want = mpi_allreduce(comm.mpi, x, "sum")
        mpicoll.allreduce(x, algorithm=algorithm, comm=comm, out=x)
        assert_equal_all(comm.mpi, x, want, f"allreduce out=x, n={count}")
    if algorithm in ("tree", "native"):
        x = rank_input(3001, comm.rank, "int64")
        want = mpi_allreduce(comm.mpi, x, "sum")
        mpicoll.reduce(x, "sum", 0, algorithm=algorithm, comm=comm, out=x if comm.rank == 0 else None)
        if comm.rank == 0:
            np.testing.assert_array_equal(x, want)
        y = rank_input(3001, comm.rank, "int64")
        mpicoll.broadcast(y, 0, algorithm=algorithm, comm=comm, out=y)
        assert_equal_all(comm.mpi, y, rank_input(3001, 0, "int64"), "broadcast out=x")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_repeated_staged_calls_allocate_no_host_buffers(comm, algorithm, staged):
    x = rank_input(200003, comm.rank, "int64")
    mpicoll.allreduce(x, algorithm=algorithm, comm=comm)
    before = sum(s.pool.allocations for s in staged.values())
    for _ in range(3):
        mpicoll.allreduce(x, algorithm=algorithm, comm=comm)
    after = sum(s.pool.allocations for s in staged.values())
    assert_all(comm.mpi, after == before, f"{after - before} new pinned buffers in repeated calls")


@pytest.mark.parametrize("algorithm", ["ring", "native"])
def test_staged_other_collectives(comm, algorithm):
    total = 2 * comm.size + 1001
    x = rank_input(total, comm.rank, "int64")
    counts = even_counts(total, comm.size)
    start = displacements(counts)[comm.rank]
    full = mpi_allreduce(comm.mpi, x, "sum")
    got = mpicoll.reduce_scatter(x, algorithm=algorithm, comm=comm)
    assert_equal_all(comm.mpi, got, full[start: start + counts[comm.rank]], "reduce_scatter")
    got = mpicoll.allgather(x[:77], algorithm=algorithm, comm=comm)
    assert_equal_all(comm.mpi, got, np.stack([v[:77] for v in all_inputs(total, comm.size, "int64")]), "allgather")
    root = comm.size - 1
    got = mpicoll.broadcast(x, root, algorithm="tree" if algorithm == "ring" else algorithm, comm=comm)
    assert_equal_all(comm.mpi, got, rank_input(total, root, "int64"), "broadcast")
    got = mpicoll.reduce(x, "max", root, algorithm="tree" if algorithm == "ring" else algorithm, comm=comm)
    if comm.rank == root:
        np.testing.assert_array_equal(got, mpi_allreduce(comm.mpi, x, "max"))
    else:
        mpi_allreduce(comm.mpi, x, "max")
