"""alltoall with counts: every algorithm against MPI_Alltoallv, bitwise, on any rank count."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from mpitools import assert_all, assert_equal_all, rank_input

import mpicoll
from mpicoll.collectives.partition import displacements

ALGORITHMS = ["pairwise", "linear", "native", "auto"]


def counts_matrix(size: int, seed: int) -> np.ndarray:
    """counts[i, j]: elements rank i sends to rank j (zeros included, different everywhere)."""
    rng = np.random.default_rng([seed, size])
    counts = rng.integers(0, 7, size=(size, size))
    counts[rng.random((size, size)) < 0.2] = 0
    return counts


def reference(comm: mpicoll.Comm, x: np.ndarray, sendcounts: list[int], recvcounts: list[int]) -> np.ndarray:
    """MPI_Alltoallv of the same bytes."""
    item = x.dtype.itemsize
    send_bytes, recv_bytes = [c * item for c in sendcounts], [c * item for c in recvcounts]
    out = np.empty(sum(recvcounts), dtype=x.dtype)
    comm.mpi.Alltoallv([np.ascontiguousarray(x), send_bytes, displacements(send_bytes), MPI.BYTE],
                       [out, recv_bytes, displacements(recv_bytes), MPI.BYTE])
    return out


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float16", "float32", "int64", "complex128", "uint8", "bool"])
def test_counts_equal_mpi_alltoallv(comm, algorithm, dtype):
    for seed in range(3):
        matrix = counts_matrix(comm.size, seed)
        sendcounts, recvcounts = matrix[comm.rank].tolist(), matrix[:, comm.rank].tolist()
        x = rank_input(sum(sendcounts), comm.rank, "int64", seed=seed).astype(dtype)
        want = reference(comm, x, sendcounts, recvcounts)
        got = mpicoll.alltoall(x, sendcounts=sendcounts, algorithm=algorithm, comm=comm)
        assert_equal_all(comm.mpi, got, want, f"seed={seed}, recvcounts exchanged")
        out = np.full(sum(recvcounts), 7, dtype=dtype)
        got = mpicoll.alltoall(x, sendcounts=sendcounts, recvcounts=recvcounts, algorithm=algorithm, comm=comm,
                               out=out)
        assert_all(comm.mpi, got is out, "out= is returned")
        assert_equal_all(comm.mpi, out, want, f"seed={seed}, recvcounts given")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_even_blocks_keep_the_shape(comm, algorithm):
    for rows_per_rank in (0, 1, 3):
        x = np.stack([rank_input(5, 10 * comm.rank + j, "int64") for j in range(rows_per_rank * comm.size)]) \
            if rows_per_rank else np.empty((0, 5), dtype=np.int64)
        x = x.astype(np.float32).reshape(rows_per_rank * comm.size, 5)
        got = mpicoll.alltoall(x, algorithm=algorithm, comm=comm)
        counts = [rows_per_rank * 5] * comm.size
        want = reference(comm, x, counts, counts).reshape(x.shape)
        assert_equal_all(comm.mpi, got, want, f"rows_per_rank={rows_per_rank}")


def test_non_contiguous_input_and_nonblocking(comm):
    big = rank_input(4 * comm.size * 3, comm.rank, "int64").reshape(4 * comm.size, 3)
    x = big[::2]  # a strided view: copied to scratch, never modified
    before = x.copy()
    handle = mpicoll.ialltoall(x, algorithm="pairwise", comm=comm)
    counts = [2 * 3] * comm.size
    want = reference(comm, np.ascontiguousarray(x), counts, counts).reshape(x.shape)
    assert_equal_all(comm.mpi, handle.wait(), want)
    assert_equal_all(comm.mpi, x, before, "input untouched")


def test_large_blocks_bitwise(comm):
    counts = [(50_000 + 1000 * ((comm.rank + j) % 3)) for j in range(comm.size)]
    x = np.random.default_rng(comm.rank).standard_normal(sum(counts)).astype(np.float32)
    incoming = [(50_000 + 1000 * ((j + comm.rank) % 3)) for j in range(comm.size)]
    want = reference(comm, x, counts, incoming)
    for algorithm in ALGORITHMS:
        got = mpicoll.alltoall(x, sendcounts=counts, algorithm=algorithm, comm=comm)
        assert_equal_all(comm.mpi, got, want, algorithm)


def test_wrong_recvcounts_raise_on_every_rank(comm):
    sendcounts = [1] * comm.size
    recvcounts = [1] * comm.size
    if comm.rank == comm.size - 1:
        recvcounts[0] = 2  # not what rank 0 sends here
    x = np.zeros(comm.size, dtype=np.int32)
    with pytest.raises((mpicoll.ArgumentError, mpicoll.PeerError), match=r"recvcounts|rejected"):
        mpicoll.alltoall(x, sendcounts=sendcounts, recvcounts=recvcounts, comm=comm)
    # the communicator is still in step afterwards
    got = mpicoll.alltoall(np.arange(comm.size, dtype=np.int32), sendcounts=sendcounts, comm=comm)
    assert_equal_all(comm.mpi, got, np.full(comm.size, comm.rank, dtype=np.int32))


def test_bad_arguments_raise_on_every_rank(comm):
    x = np.zeros(comm.size + 1, dtype=np.float32)
    if comm.size > 1:
        with pytest.raises(mpicoll.ArgumentError, match="multiple of"):
            mpicoll.alltoall(x, comm=comm)
    bad = [1] * comm.size if comm.rank == 0 else [0] * (comm.size - 1) + [comm.size + 1]
    ctx = pytest.raises(mpicoll.ArgumentError if comm.rank == 0 else mpicoll.PeerError)
    with ctx:
        mpicoll.alltoall(x, sendcounts=bad, comm=comm)
    if comm.size > 1:
        with pytest.raises(mpicoll.MismatchError, match="algorithm"):
            mpicoll.alltoall(np.zeros(comm.size, np.float32), sendcounts=[1] * comm.size,
                             algorithm="pairwise" if comm.rank else "linear", comm=comm)
    with pytest.raises(mpicoll.UnsupportedError, match="unknown algorithm"):
        mpicoll.alltoall(np.zeros(comm.size, np.float32), algorithm="bruck", comm=comm)
