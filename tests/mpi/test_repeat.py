"""Repeated small all-reduces run from a plan (issue 20, ``mpicoll.collectives.repeat``).

A plan skips the local checks and sends the full path's messages. These tests put ranks that run
a plan against ranks on the full path (a first call with other arguments, another collective, a
local failure) and check that every disagreement is still caught on every rank, on the first call
where it happens, and that a plan's bits equal the full path's.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import assert_all, raises_everywhere

import mpicoll
from mpicoll.collectives import repeat
from mpicoll.errors import ArgumentError, MismatchError, PeerError

multi = pytest.mark.skipif(mpicoll.size() < 2, reason="needs at least 2 ranks to disagree")


def plan_of(comm, x, op="sum", algorithm="auto", out=None):
    """The plan a call would run now (and how), or None."""
    return repeat.lookup(comm, x, op, algorithm, out, mpicoll.config.stamp)


def planned(comm, x, op="sum", algorithm="auto"):
    """Call twice (the first call plans, the second runs the plan) and check the plan exists."""
    first = mpicoll.allreduce(x, op, algorithm=algorithm, comm=comm)
    assert_all(comm.mpi, plan_of(comm, x, op, algorithm, None) is not None, "no plan after a checked small call")
    second = mpicoll.allreduce(x, op, algorithm=algorithm, comm=comm)
    assert_all(comm.mpi, first.tobytes() == second.tobytes(), "the plan's result differs from the full path's")
    return second


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max", "avg", "bor"])
# in band up to 64 KiB: struct datatypes up to 16 KiB, one contiguous buffer above (8192 float64: 64 KiB)
@pytest.mark.parametrize("shape", [(1,), (7,), (31, 33), (2048,), (8192,), (4, 2047)])
def test_plan_bits_equal_the_full_path(comm, dtype, op, shape):
    dtype = np.dtype(dtype)
    if (op == "avg" and dtype.kind != "f") or (op == "bor" and dtype.kind == "f"):
        pytest.skip("op not defined for this dtype")
    rng = np.random.default_rng(comm.rank + 31 * len(shape))
    x = rng.integers(1, 3 if op == "prod" else 200, size=shape).astype(dtype)
    got = planned(comm, x, op)
    with mpicoll.config.override(validate=False):
        want = mpicoll.allreduce(x, op, algorithm="recursive_doubling", comm=comm)
    assert_all(comm.mpi, got.tobytes() == want.tobytes() and got.shape == x.shape and got.dtype == x.dtype,
               f"plan differs from recursive doubling ({dtype}, {op}, {shape})")
    assert_all(comm.mpi, len(set(comm.mpi.allgather(got.tobytes()))) == 1, "ranks differ")
    again = mpicoll.allreduce(x.copy(), op, comm=comm)  # another array of the key: the same plan
    assert_all(comm.mpi, again.tobytes() == got.tobytes() and again is not got, "a new array, the same bits")
    out = np.full_like(x, 3)
    assert_all(comm.mpi, mpicoll.allreduce(x, op, comm=comm, out=out) is out and out.tobytes() == got.tobytes(),
               "out= differs")
    inplace = x.copy()
    assert_all(comm.mpi, mpicoll.allreduce(inplace, op, comm=comm, out=inplace) is inplace
               and inplace.tobytes() == got.tobytes(), "in place differs")


@pytest.mark.parametrize("algorithm", ["auto", "ring", "recursive_doubling", "rabenseifner", "tree", "native"])
@pytest.mark.parametrize("count", [5000, 70001])
def test_large_plan_bits_equal_the_full_path(comm, algorithm, count):
    """Too large to ride in band: the plan runs the agreement's round, then the algorithm."""
    x = np.random.default_rng(comm.rank).standard_normal(count).astype(np.float32)
    got = planned(comm, x, "sum", algorithm)
    with mpicoll.config.override(validate=False):
        want = mpicoll.allreduce(x, algorithm=algorithm, comm=comm)
    if algorithm != "native":  # MPI's own may round differently from call to call
        assert_all(comm.mpi, got.tobytes() == want.tobytes(), f"{algorithm}: the plan differs from the algorithm")
        assert_all(comm.mpi, len(set(comm.mpi.allgather(got.tobytes()))) == 1, "ranks differ")
    ref = np.empty(count)
    from mpi4py import MPI
    comm.mpi.Allreduce(x.astype(np.float64), ref, op=MPI.SUM)
    assert_all(comm.mpi, np.allclose(got, ref, atol=1e-3), f"{algorithm}: wrong sum")


@multi
def test_large_planned_ranks_meet_another_count_and_algorithm(comm):
    x = np.ones(6000, dtype=np.float32)
    planned(comm, x, "sum", "ring")
    mine = np.ones(6001, dtype=np.float32) if comm.rank == 1 else x
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(mine, algorithm="ring", comm=comm), "count")
    algorithm = "tree" if comm.rank == 0 else "ring"
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(x, algorithm=algorithm, comm=comm), "algorithm")
    small = np.ones(6, dtype=np.float32)  # a small planned call against a large planned one
    planned(comm, small)
    mine = small if comm.rank == 0 else x
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(mine, algorithm="ring", comm=comm), "count")
    planned(comm, x, "sum", "ring")


def test_against_mpi_and_float64(comm):
    from mpi4py import MPI

    for step in range(5):  # a loop of calls: the first plans, the rest run the plan, with new data each time
        x = np.linspace(-1, 1, 999, dtype=np.float32) * (comm.rank + 1 + step)
        got = mpicoll.allreduce(x, comm=comm)
        ref = np.empty(999)
        comm.mpi.Allreduce(x.astype(np.float64), ref, op=MPI.SUM)
        assert_all(comm.mpi, np.allclose(got, ref, atol=1e-4), f"wrong sum at step {step}")


@multi
@pytest.mark.parametrize("theirs", [12, 5000], ids=["small", "large"])
def test_planned_ranks_meet_another_count(comm, theirs):
    x = np.ones(11, dtype=np.float32)
    planned(comm, x)
    mine = np.ones(theirs, dtype=np.float32) if comm.rank == 1 else x
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(mine, comm=comm), "count", f"rank 1: {theirs}")
    planned(comm, x)  # back in step, the plan still good


@multi
def test_planned_ranks_meet_another_dtype_and_op(comm):
    x = np.ones(16, dtype=np.float32)
    planned(comm, x)
    mine = x.view(np.int32) if comm.rank == 1 else x  # the same bytes
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(mine, comm=comm), "dtype")
    op = "max" if comm.rank == comm.size - 1 else "sum"
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(x, op, comm=comm), "op")


@multi
def test_both_sides_on_plans_with_different_counts(comm):
    """Every rank has plans for 9 and 8 elements; rank 0 runs one, the others the other."""
    nine, eight = np.ones(9), np.ones(8)
    planned(comm, nine)
    planned(comm, eight)
    x = nine if comm.rank == 0 else eight
    for _ in range(2):
        raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(x, comm=comm), "count", "rank 0: 9")
    planned(comm, nine)


@multi
@pytest.mark.parametrize("other", ["broadcast", "allgather", "reduce_scatter"])
def test_planned_ranks_meet_another_collective(comm, other):
    x = np.ones(2 * comm.size, dtype=np.float32)
    planned(comm, x)
    call = (lambda: getattr(mpicoll, other)(x, comm=comm)) if comm.rank == 0 else \
        (lambda: mpicoll.allreduce(x, comm=comm))
    raises_everywhere(comm, MismatchError, call, "different collectives", f"rank 0: {other}")
    planned(comm, x)


@multi
def test_planned_ranks_meet_a_local_failure(comm):
    x = np.ones(6, dtype=np.float32)
    planned(comm, x)
    if comm.rank == 1:
        raises_everywhere(comm, ArgumentError, lambda: mpicoll.allreduce([1.0] * 6, comm=comm), "NumPy")
    else:
        raises_everywhere(comm, PeerError, lambda: mpicoll.allreduce(x, comm=comm), "rank 1")
    planned(comm, x)


@multi
def test_one_rank_skips_a_planned_call(comm):
    x, y = np.ones(5, dtype=np.float32), np.ones(10, dtype=np.float32)
    planned(comm, x)
    planned(comm, y)
    first = y if comm.rank == 1 else x
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(first, comm=comm), "count")
    z = mpicoll.allreduce(y, comm=comm)
    assert_all(comm.mpi, bool((z == comm.size).all()), "the next call")


@multi
@pytest.mark.parametrize("count", [12, 6000], ids=["in-band", "separate"])
@pytest.mark.parametrize("differs", ["count", "op"])
def test_refused_planned_calls_change_nothing(comm, count, differs):
    """Planned calls with out= and in place, against a rank with another count (messages of another
    length) or another op (messages of the expected length, rows that differ: the planned ranks
    compute their result where they would write it only once the table agrees): x and out keep
    their bytes on every rank."""
    x = np.arange(count, dtype=np.float32)
    out = np.zeros_like(x)
    planned(comm, x)
    mpicoll.allreduce(x, out=out, comm=comm)  # plans are per key: every kind of out runs the same plan
    odd = comm.rank == 1
    mine = np.arange(count + 1, dtype=np.float32) if odd and differs == "count" else x
    op = "max" if odd and differs == "op" else "sum"
    before, out_before = mine.copy(), out.copy()
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(mine, op, out=mine, comm=comm), differs)
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(
        mine, op, out=out if mine is x else np.zeros_like(mine), comm=comm), differs)
    assert_all(comm.mpi, mine.tobytes() == before.tobytes() and out.tobytes() == out_before.tobytes(),
               "a refused call wrote x or out")


def test_out_arguments_the_plan_leaves_to_the_full_path(comm):
    x = np.ones(10, dtype=np.float64)
    planned(comm, x)
    for out in (np.empty(10, dtype=np.float32), np.empty(11), np.empty(20)[::2], x[::-1]):
        assert_all(comm.mpi, plan_of(comm, x, "sum", "auto", out) is None, f"planned with out {out.shape}")
    readonly = np.empty(10)
    readonly.flags.writeable = False
    assert_all(comm.mpi, plan_of(comm, x, "sum", "auto", readonly) is None, "planned with a read-only out")
    raises_everywhere(comm, mpicoll.errors.ArgumentError, lambda: mpicoll.allreduce(x, out=readonly, comm=comm),
                      "read-only")
    raises_everywhere(comm, mpicoll.errors.ArgumentError, lambda: mpicoll.allreduce(x, out=x[::-1], comm=comm),
                      "overlaps")
    planned(comm, x)


def test_settings_changes_and_non_plain_arrays_take_the_full_path(comm):
    x = np.arange(10, dtype=np.float64)
    planned(comm, x)
    with mpicoll.config.override(segment_bytes=4096):  # a setting the signature holds: the plan is stale
        assert_all(comm.mpi, plan_of(comm, x, "sum", "auto", None) is None, "a plan outlived a settings change")
        y = mpicoll.allreduce(x, comm=comm)
    assert_all(comm.mpi, np.array_equal(y, x * comm.size), "sum under other settings")
    strided = np.arange(20, dtype=np.float64)[::2]
    assert_all(comm.mpi, plan_of(comm, strided, "sum", "auto", None) is None, "a strided view took a plan")
    assert_all(comm.mpi, np.array_equal(mpicoll.allreduce(strided, comm=comm), strided * comm.size), "strided sum")
    with mpicoll.config.override(check_finite=True):  # a check on the values: never skipped
        x[3] = np.nan
        raises_everywhere(comm, mpicoll.errors.NonFiniteError if comm.size == 1 or comm.rank == 0 else PeerError,
                          lambda: mpicoll.allreduce(x if comm.rank == 0 else np.arange(10.0), comm=comm))


@multi
def test_unchecked_plans_run_the_algorithm(comm):
    """Validation off: a plan skips the local checks, runs no agreement, gives the same bits; and
    turning validation back on makes it stale (the next call agrees again, and catches a mismatch)."""
    x = np.random.default_rng(comm.rank).standard_normal(3000).astype(np.float32)
    with mpicoll.config.override(validate=False):
        got = planned(comm, x, "sum", "ring")
        want = mpicoll.allreduce(x, algorithm="ring", comm=comm, out=np.empty_like(x))
    assert_all(comm.mpi, got.tobytes() == want.tobytes(), "unchecked plan differs")
    assert_all(comm.mpi, plan_of(comm, x, "sum", "ring", None) is None, "stale plan after the setting changed")
    mine = x[:-1].copy() if comm.rank == 1 else x
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(mine, algorithm="ring", comm=comm), "count")


def test_a_rewritten_auto_table_makes_plans_stale(comm):
    """``mpicoll-bench tune`` writes a table and calls auto.reset(): a plan holding the old choice
    must not run (ranks on the full path would pick the new one and disagree)."""
    from mpicoll.collectives import auto

    x = np.ones(5000, dtype=np.float32)
    planned(comm, x)
    auto.reset()
    assert_all(comm.mpi, plan_of(comm, x, "sum", "auto", None) is None,
               "a plan outlived auto.reset()")
    planned(comm, x)


@multi
@pytest.mark.parametrize("count", [12, 6000], ids=["in-band", "separate"])
def test_a_failure_before_the_first_message_reaches_the_peers(comm, count, monkeypatch):
    """Rank 1 cannot allocate the result of a planned call: the others get a PeerError naming it
    (as from the full path, where the allocation is one of the local checks), nobody waits."""
    x = np.ones(count, dtype=np.float32)
    planned(comm, x)
    if comm.rank == 1:
        real = np.empty

        def empty(shape, *args, **kwargs):
            if tuple(np.atleast_1d(shape)) == x.shape:
                raise MemoryError("simulated: no memory for the result")
            return real(shape, *args, **kwargs)

        monkeypatch.setattr(repeat.np, "empty", empty)
        raises_everywhere(comm, MemoryError, lambda: mpicoll.allreduce(x, comm=comm), "simulated")
        monkeypatch.undo()
    else:
        raises_everywhere(comm, PeerError, lambda: mpicoll.allreduce(x, comm=comm), "rank 1", "simulated")
    planned(comm, x)


def test_plan_limit(comm):
    for n in range(1, repeat.LIMIT + 5):  # more distinct calls than a communicator keeps plans for
        y = mpicoll.allreduce(np.ones(n, dtype=np.int32), comm=comm)
        assert_all(comm.mpi, bool((y == comm.size).all()), f"count {n}")
    assert_all(comm.mpi, len(comm.cache[repeat._SLOT]) <= repeat.LIMIT, "plans beyond the limit")


def test_the_fast_lane_skips_only_what_would_do_nothing(comm):
    """``allreduce`` runs a plan before its watchdog/timeline decorator only where that decorator
    would do nothing: a plan made with the stall watchdog off, on an existing ``Comm``. With a
    timeout set (a setting: plans made before it are stale) the call takes the watched path."""
    x = np.arange(6, dtype=np.float64) + comm.rank
    want = planned(comm, x)
    got = repeat.fast(comm, x, "sum", "auto", None)
    assert_all(comm.mpi, got is not repeat.MISS and got.tobytes() == want.tobytes(), "fast lane result")
    assert_all(comm.mpi, repeat.fast(comm.mpi, x, "sum", "auto", None) is repeat.MISS,
               "an mpi4py communicator went round its (collective, watched) first wrapping")
    with mpicoll.config.override(timeout=600):
        assert_all(comm.mpi, repeat.fast(comm, x, "sum", "auto", None) is repeat.MISS, "a plan outlived the timeout")
        again = planned(comm, x)  # planned under the watchdog: such plans run only from the watched path
        assert_all(comm.mpi, plan_of(comm, x) is not None and not plan_of(comm, x)[0].quiet, "the plan is quiet")
        assert_all(comm.mpi, repeat.fast(comm, x, "sum", "auto", None) is repeat.MISS, "watched plan in the fast lane")
    assert_all(comm.mpi, again.tobytes() == want.tobytes(), "the watched plan's result")


@multi
@pytest.mark.parametrize("count", [12, 6000], ids=["in-band", "separate"])
def test_a_refused_plan_expects_its_rows_again(comm, count):
    """A plan keeps its own table filled with the rows it expects and compares what arrives; a
    refused call writes the rows that did arrive there. The next call must expect the agreed rows
    again (and still catch the next mismatch)."""
    x = np.arange(count, dtype=np.float32) + comm.rank
    want = planned(comm, x)
    for _ in range(2):
        op = "max" if comm.rank == comm.size - 1 else "sum"
        raises_everywhere(comm, MismatchError, lambda op=op: mpicoll.allreduce(x, op, comm=comm), "op")
        again = mpicoll.allreduce(x, comm=comm)
        assert_all(comm.mpi, again.tobytes() == want.tobytes(), "the call after a refused one")
        assert_all(comm.mpi, plan_of(comm, x) is not None, "the plan was dropped")
