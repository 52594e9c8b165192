"""Property-based tests: any count, dtype, op, segment size and algorithm agrees with MPI.

Hypothesis runs derandomized (see conftest), so every rank draws the same examples; verdicts
are collective, so a failing example fails (and shrinks) on every rank together.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from mpitools import assert_equal_all, assert_same_on_all_ranks, mpi_allreduce, rank_input

import mpicoll

ALGORITHMS = ["ring", "tree", "recursive_doubling", "rabenseifner", "shm", "native", "auto"]


@given(
    count=st.integers(0, 3000),
    dtype=st.sampled_from(["float16", "float32", "float64", "int32", "int64"]),
    op=st.sampled_from(["sum", "prod", "min", "max", "avg"]),
    algorithm=st.sampled_from(ALGORITHMS),
    segment=st.sampled_from([1024, 2048, 8192, 1 << 20]),
    depth=st.integers(1, 6),
    seed=st.integers(0, 1000),
)
def test_allreduce_property(comm, count, dtype, op, algorithm, segment, depth, seed):
    if op == "avg" and dtype.startswith("int"):
        dtype = "float32"
    x = rank_input(count, comm.rank, dtype, "prod" if op == "prod" else "int", seed=seed)
    with mpicoll.config.override(segment_bytes=segment, pipeline_depth=depth):
        got = mpicoll.allreduce(x, op, algorithm=algorithm, comm=comm)
    assert_equal_all(comm.mpi, got, mpi_allreduce(comm.mpi, x, op), f"{algorithm} {dtype} {op} n={count}")
    assert_same_on_all_ranks(comm.mpi, got)


@given(
    counts=st.lists(st.integers(0, 700), min_size=5, max_size=5),
    algorithm=st.sampled_from(["ring", "native"]),
    segment=st.sampled_from([1024, 4096]),
)
def test_reduce_scatter_allgather_roundtrip(comm, counts, algorithm, segment):
    counts = counts[: comm.size] + [3] * max(0, comm.size - len(counts))
    x = rank_input(sum(counts), comm.rank, "int64")
    with mpicoll.config.override(segment_bytes=segment):
        block = mpicoll.reduce_scatter(x, counts=counts, algorithm=algorithm, comm=comm)
        full = mpicoll.allgather(block, counts=counts, algorithm=algorithm, comm=comm)
    assert_equal_all(comm.mpi, full, mpi_allreduce(comm.mpi, x, "sum"))
    np.testing.assert_array_equal(x, rank_input(sum(counts), comm.rank, "int64"))  # input untouched
