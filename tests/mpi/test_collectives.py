"""reduce_scatter, allgather, broadcast and reduce: every algorithm against MPI's own collectives."""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import all_inputs, assert_all, assert_equal_all, mpi_allreduce, rank_input

import mpicoll
from mpicoll.collectives.partition import displacements, even_counts


@pytest.fixture(autouse=True)
def small_segments():
    with mpicoll.config.override(segment_bytes=1024):
        yield


def uneven_counts(size: int) -> list[int]:
    return [(3 * r + 1) % 5 for r in range(size)]  # includes zero-sized blocks from 5 ranks up


@pytest.mark.parametrize("algorithm", ["ring", "native", "auto"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "int64"])
@pytest.mark.parametrize("op", ["sum", "max", "avg"])
def test_reduce_scatter(comm, algorithm, dtype, op):
    if op == "avg" and dtype == "int64":
        pytest.skip("avg needs a floating dtype")
    for total in (1, comm.size, 2 * comm.size + 1, 2003):
        x = rank_input(total, comm.rank, dtype)
        full = mpi_allreduce(comm.mpi, x, op)
        counts = even_counts(total, comm.size)
        start = displacements(counts)[comm.rank]
        got = mpicoll.reduce_scatter(x, op, algorithm=algorithm, comm=comm)
        assert_equal_all(comm.mpi, got, full[start: start + counts[comm.rank]], f"total={total}")
    counts = uneven_counts(comm.size)
    x = rank_input(sum(counts), comm.rank, dtype)
    full = mpi_allreduce(comm.mpi, x, op)
    start = displacements(counts)[comm.rank]
    got = mpicoll.reduce_scatter(x, op, counts=counts, algorithm=algorithm, comm=comm)
    assert_equal_all(comm.mpi, got, full[start: start + counts[comm.rank]], f"counts={counts}")


@pytest.mark.parametrize("algorithm", ["ring", "native", "auto"])
@pytest.mark.parametrize("dtype", ["float16", "int32", "complex128", "uint8"])
def test_allgather(comm, algorithm, dtype):
    for count in (1, 5, 1001):
        x = rank_input(count, comm.rank, "int64").astype(dtype).reshape(count, 1)
        got = mpicoll.allgather(x, algorithm=algorithm, comm=comm)
        want = np.stack([v.astype(dtype).reshape(count, 1) for v in all_inputs(count, comm.size, "int64")])
        assert_equal_all(comm.mpi, got, want, f"count={count}")
    counts = uneven_counts(comm.size)
    x = rank_input(counts[comm.rank], comm.rank, "int64").astype(dtype)
    got = mpicoll.allgather(x, counts=counts, algorithm=algorithm, comm=comm)
    want = np.concatenate([rank_input(c, r, "int64").astype(dtype) for r, c in enumerate(counts)])
    assert_equal_all(comm.mpi, got, want, f"counts={counts}")


@pytest.mark.parametrize("algorithm", ["tree", "native", "auto"])
@pytest.mark.parametrize("dtype", ["float16", "float64", "int8"])
def test_broadcast_from_every_root(comm, algorithm, dtype):
    for root in range(comm.size):
        for count in (1, 7, 3001):
            want = rank_input(count, root, "int64").astype(dtype).reshape(count, 1)
            x = want.copy() if comm.rank == root else np.full_like(want, 99)
            before = x.copy()
            got = mpicoll.broadcast(x, root, algorithm=algorithm, comm=comm)
            assert_equal_all(comm.mpi, got, want, f"root={root} count={count}")
            assert_equal_all(comm.mpi, x, before, "x untouched")
            mpicoll.broadcast(x, root, algorithm=algorithm, comm=comm, out=x)
            assert_equal_all(comm.mpi, x, want, "in place")


@pytest.mark.parametrize("algorithm", ["tree", "native", "auto"])
@pytest.mark.parametrize("op", ["sum", "prod", "min", "avg"])
def test_reduce_to_every_root(comm, algorithm, op):
    kind = "prod" if op == "prod" else "int"
    for root in range(comm.size):
        for count in (1, 4097):
            x = rank_input(count, comm.rank, "float32", kind)
            want = mpi_allreduce(comm.mpi, x, op)
            got = mpicoll.reduce(x, op, root, algorithm=algorithm, comm=comm)
            if comm.rank == root:
                assert_equal_all(comm.mpi, got, want, f"root={root}")
            else:
                assert_all(comm.mpi, got is None, f"non-root got {type(got).__name__}, want None")


@pytest.mark.parametrize("algorithm", ["ring", "native", "auto"])
def test_allgather_counts_differ_widely(comm, algorithm):
    # auto must choose by the total size (the same on every rank), not by this rank's share
    counts = [20000 if r == 0 else 10 for r in range(comm.size)]
    x = rank_input(counts[comm.rank], comm.rank, "float32")
    got = mpicoll.allgather(x, counts=counts, algorithm=algorithm, comm=comm)
    want = np.concatenate([rank_input(c, r, "float32") for r, c in enumerate(counts)])
    assert_equal_all(comm.mpi, got, want)


def test_out_buffers_of_the_other_collectives(comm):
    total = 3 * comm.size + 1
    x = rank_input(total, comm.rank, "float16")
    full = mpi_allreduce(comm.mpi, x, "sum")
    counts = even_counts(total, comm.size)
    start = displacements(counts)[comm.rank]
    out = np.empty(counts[comm.rank], dtype=np.float16)
    assert_all(comm.mpi, mpicoll.reduce_scatter(x, out=out, comm=comm) is out, "reduce_scatter returns out")
    assert_equal_all(comm.mpi, out, full[start: start + counts[comm.rank]], "reduce_scatter out=")
    gathered = np.empty((comm.size, total), dtype=np.float16)
    mpicoll.allgather(x, out=gathered, comm=comm)
    assert_equal_all(comm.mpi, gathered, np.stack([rank_input(total, r, "float16") for r in range(comm.size)]))
    for algorithm in ("tree", "native"):
        y = x.copy()
        mpicoll.reduce(y, "sum", 0, algorithm=algorithm, comm=comm, out=y if comm.rank == 0 else None)
        if comm.rank == 0:
            assert_equal_all(comm.mpi, y, full, f"reduce in place at the root ({algorithm})")
        else:
            assert_equal_all(comm.mpi, y, x, "non-root input untouched")
        strided = rank_input(2 * total, comm.rank, "float64")[::2]
        got = mpicoll.reduce(strided, "max", 0, algorithm=algorithm, comm=comm)
        want = mpi_allreduce(comm.mpi, np.ascontiguousarray(strided), "max")
        if comm.rank == 0:
            assert_equal_all(comm.mpi, got, want, "reduce of a strided view")
        else:
            assert_all(comm.mpi, got is None, "non-root result")


@pytest.mark.parametrize("algorithm", ["ring", "tree", "recursive_doubling", "rabenseifner"])
@pytest.mark.parametrize("op", ["min", "max", "sum"])
def test_nan_and_signed_zero_agree_on_every_rank(comm, algorithm, op):
    from mpitools import assert_same_on_all_ranks

    x = np.array([0.0, -0.0, 1.0, -1.0, 5.0] * 3, dtype=np.float32)
    x[:5] *= -1 if comm.rank % 2 else 1  # signed zeros differ between ranks
    if comm.rank == comm.size - 1:
        x[7] = np.nan
    got = mpicoll.allreduce(x, op, algorithm=algorithm, comm=comm)
    assert_same_on_all_ranks(comm.mpi, got, f"{algorithm} {op}")
    assert_all(comm.mpi, bool(np.isnan(got[7])), f"NaN did not propagate: {got[7]}")
