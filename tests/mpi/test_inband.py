"""The argument agreement with a small all-reduce riding in its messages (issue 20).

With validation on, an all-reduce of at most ``INBAND_BYTES`` on host arrays is reduced inside
the agreement's own recursive-doubling exchange. These tests check that every kind of mismatch
is still caught on the first call, on every rank, that a refused call changes nothing, and that
the bits equal recursive doubling's.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import assert_all, raises_everywhere

import mpicoll
from mpicoll.collectives.internal import inband
from mpicoll.errors import MismatchError, PeerError

multi = pytest.mark.skipif(mpicoll.size() < 2, reason="needs at least 2 ranks to disagree")
SMALL = 10
LARGE = inband.INBAND_BYTES // 4 + 1000  # float32 elements: too large to ride in band


def still_works(comm):
    y = mpicoll.allreduce(np.ones(3, dtype=np.int64), comm=comm)
    assert_all(comm.mpi, bool((y == comm.size).all()), "allreduce after the error")


@multi
@pytest.mark.parametrize("mine,theirs", [(SMALL, SMALL + 1), (SMALL, LARGE), (LARGE, SMALL), (LARGE, LARGE + 1)],
                         ids=["both-small", "small-large", "large-small", "both-large"])
def test_different_counts_are_caught_on_the_first_call(comm, mine, theirs):
    x = np.ones(theirs if comm.rank == 1 else mine, dtype=np.float32)
    before = x.copy()
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(x, out=x, comm=comm), "count",
                      f"rank 1: {theirs}")
    assert_all(comm.mpi, bool((x == before).all()), "a refused in-place call changed x")
    still_works(comm)


@multi
def test_same_bytes_different_dtype(comm):
    x = np.ones(16, dtype=np.int32 if comm.rank == 0 else np.float32)
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(x, comm=comm), "dtype", "rank 0: int32")
    still_works(comm)


@multi
@pytest.mark.parametrize("other", ["ring", "native", "recursive_doubling"])
def test_different_algorithms(comm, other):
    algorithm = other if comm.rank == comm.size - 1 else "auto"
    if other == "recursive_doubling":  # auto rides in band as recursive doubling: no mismatch, same bits
        y = mpicoll.allreduce(np.arange(8.0), algorithm=algorithm, comm=comm)
        assert_all(comm.mpi, len(set(comm.mpi.allgather(y.tobytes()))) == 1, "results differ")
        return
    raises_everywhere(comm, MismatchError,
                      lambda: mpicoll.allreduce(np.ones(8), algorithm=algorithm, comm=comm), "algorithm")
    still_works(comm)


@multi
def test_one_rank_skips_a_call(comm):
    """Ranks other than 1 call allreduce(x) then allreduce(y); rank 1 skips the first."""
    x, y = np.ones(SMALL, dtype=np.float32), np.ones(2 * SMALL, dtype=np.float32)
    first = y if comm.rank == 1 else x
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(first, comm=comm), "count")
    z = mpicoll.allreduce(y, comm=comm)  # everyone back in step
    assert_all(comm.mpi, bool((z == comm.size).all()), "the next call")


@multi
@pytest.mark.parametrize("other", ["broadcast", "reduce", "allgather", "reduce_scatter"])
def test_small_allreduce_against_another_collective(comm, other):
    x = np.ones(2 * comm.size, dtype=np.float32)
    call = (lambda: getattr(mpicoll, other)(x, comm=comm)) if comm.rank == 0 else \
        (lambda: mpicoll.allreduce(x, comm=comm))
    raises_everywhere(comm, MismatchError, call, "different collectives", f"rank 0: {other}")
    still_works(comm)


@multi
def test_local_failure_on_one_rank(comm):
    x = np.ones(SMALL, dtype=np.float32)
    out = np.empty_like(x)
    if comm.rank == 1:
        out.flags.writeable = False
        raises_everywhere(comm, mpicoll.errors.ArgumentError, lambda: mpicoll.allreduce(x, out=out, comm=comm),
                          "read-only")
    else:
        raises_everywhere(comm, PeerError, lambda: mpicoll.allreduce(x, out=out, comm=comm), "rank 1")
    still_works(comm)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "int64"])
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max", "avg", "bxor"])
@pytest.mark.parametrize("count", [1, 7, 1000, 4096, 8192, 16384, 16385])
def test_bits_equal_recursive_doubling(comm, dtype, op, count):
    dtype = np.dtype(dtype)
    if (op == "avg" and dtype.kind != "f") or (op == "bxor" and dtype.kind == "f"):
        pytest.skip("op not defined for this dtype")
    rng = np.random.default_rng(comm.rank + 17 * count)
    x = (rng.standard_normal(count) * 3).astype(dtype) if dtype.kind == "f" else \
        rng.integers(1, 3 if op == "prod" else 1000, size=count).astype(dtype)
    keep = x.copy()
    carried = inband.carries(x, x.size * max(4, dtype.itemsize))  # float16 is reduced in float32
    got = mpicoll.allreduce(x, op, comm=comm)
    with mpicoll.config.override(validate=False):  # too large to ride in band: auto's own choice
        expected = mpicoll.allreduce(x, op, algorithm="recursive_doubling" if carried else "auto", comm=comm)
    same = got.tobytes() == expected.tobytes() and got.dtype == expected.dtype and got.shape == x.shape
    assert_all(comm.mpi, same, f"in band ({carried}) differs from recursive doubling ({dtype}, {op}, {count})")
    assert_all(comm.mpi, len(set(comm.mpi.allgather(got.tobytes()))) == 1, "ranks differ")
    assert_all(comm.mpi, x.tobytes() == keep.tobytes(), "x changed")
    inplace = x.copy()
    mpicoll.allreduce(inplace, op, out=inplace, comm=comm)
    assert_all(comm.mpi, inplace.tobytes() == got.tobytes(), "in place differs")


def test_against_mpi_and_a_float64_reference(comm):
    from mpi4py import MPI

    x = np.linspace(-1, 1, 999, dtype=np.float32) * (comm.rank + 1)
    got = mpicoll.allreduce(x.reshape(27, 37), comm=comm)
    ref64 = np.empty(999)
    comm.mpi.Allreduce(x.astype(np.float64), ref64, op=MPI.SUM)
    assert_all(comm.mpi, got.shape == (27, 37) and np.allclose(got.reshape(-1), ref64, atol=1e-5), "wrong sum")


def test_engine_communicator(comm):
    """The non-blocking engine's thread waits patiently: the agreement's messages must too."""
    x = np.arange(12, dtype=np.float64) + comm.rank
    handle = mpicoll.iallreduce(x, comm=comm)
    got = handle.wait(timeout=60)
    expected = np.arange(12) * comm.size + comm.size * (comm.size - 1) / 2
    assert_all(comm.mpi, np.array_equal(got, expected), "iallreduce result")
    if comm.size > 1:
        bad = np.ones(SMALL + (comm.rank == 1), dtype=np.float32)
        raises_everywhere(comm, MismatchError, lambda: mpicoll.iallreduce(bad, comm=comm).wait(timeout=60), "count")


@multi
def test_bounded_receive_of_a_longer_message(comm):
    """A rank whose in-band message is as long as an honest rank's can be: nothing overflows, and
    the rows still tell every rank what differs."""
    count = inband.INBAND_BYTES // 4 if comm.rank == 0 else 1
    x = np.ones(count, dtype=np.float32)
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(x, comm=comm), "count")
    still_works(comm)
