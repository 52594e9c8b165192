"""Bad input: clear errors, raised on every rank, naming ranks and values; nothing hangs."""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import assert_all, raises_everywhere

import mpicoll
from mpicoll.errors import ArgumentError, DtypeError, MismatchError, PeerError, UnsupportedError

multi = pytest.mark.skipif(mpicoll.size() < 2, reason="needs at least 2 ranks to disagree")


@multi
@pytest.mark.parametrize("collective", ["allreduce", "reduce_scatter", "broadcast", "reduce", "allgather"])
def test_mismatched_counts(comm, collective):
    count = 10 if comm.rank != 1 else 11
    x = np.ones(count, dtype=np.float32)
    fn = getattr(mpicoll, collective)
    text = raises_everywhere(comm, MismatchError, lambda: fn(x, comm=comm), "rank 1: 11", "count",
                             "rank 0: 10" if comm.size == 2 else "ranks 0, 2")
    assert_all(comm.mpi, collective in text, text)
    # the communicator still works afterwards
    y = mpicoll.allreduce(np.ones(3, dtype=np.int64), comm=comm)
    assert_all(comm.mpi, (y == comm.size).all(), "allreduce after the error")


@multi
def test_mismatched_dtype_op_root_algorithm(comm):
    dtype = np.float64 if comm.rank == 0 else np.float32
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(np.ones(4, dtype), comm=comm),
                      "dtype", "rank 0: float64")
    op = "max" if comm.rank == comm.size - 1 else "sum"
    raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(np.ones(4), op, comm=comm),
                      "op", f"rank {comm.size - 1}: max", "sum")
    root = 1 if comm.rank == 0 else 0
    raises_everywhere(comm, MismatchError, lambda: mpicoll.broadcast(np.ones(4), root, comm=comm), "root")
    algorithm = "tree" if comm.rank == 0 else "ring"
    raises_everywhere(comm, MismatchError,
                      lambda: mpicoll.allreduce(np.ones(4), algorithm=algorithm, comm=comm), "algorithm")


@multi
def test_different_collectives(comm):
    x = np.ones(4)
    call = (lambda: mpicoll.reduce(x, comm=comm)) if comm.rank == 0 else (lambda: mpicoll.allreduce(x, comm=comm))
    text = raises_everywhere(comm, MismatchError, call, "different collectives", "rank 0: reduce",
                             "allreduce")
    texts = comm.mpi.allgather(text)
    assert_all(comm.mpi, len(set(texts)) == 1, f"messages differ between ranks: {texts}")


def test_local_argument_errors(comm):
    x = np.ones(6, dtype=np.float32)
    raises_everywhere(comm, UnsupportedError, lambda: mpicoll.allreduce(x, "xor", comm=comm), "'sum'")
    raises_everywhere(comm, UnsupportedError, lambda: mpicoll.allreduce(x, algorithm="magic", comm=comm), "ring")
    raises_everywhere(comm, DtypeError, lambda: mpicoll.allreduce(np.ones(3, np.int32), "avg", comm=comm),
                      "floating")
    raises_everywhere(comm, DtypeError, lambda: mpicoll.allreduce(np.ones(3, np.uint8), comm=comm), "uint8")
    raises_everywhere(comm, ArgumentError, lambda: mpicoll.allreduce([1.0, 2.0], comm=comm), "numpy.asarray")
    raises_everywhere(comm, ArgumentError, lambda: mpicoll.allreduce(x, comm=comm, out=np.ones(5, np.float32)),
                      "shape")
    raises_everywhere(comm, DtypeError, lambda: mpicoll.allreduce(x, comm=comm, out=np.ones(6)), "dtype")
    raises_everywhere(comm, ArgumentError, lambda: mpicoll.allreduce(x, comm=comm, out=x[::-1]), "overlaps")
    raises_everywhere(comm, ArgumentError, lambda: mpicoll.broadcast(x, comm.size, comm=comm), "root")
    raises_everywhere(comm, ArgumentError, lambda: mpicoll.reduce_scatter(x, counts=[1] * (comm.size + 1),
                                                                          comm=comm), "one count per rank")
    raises_everywhere(comm, ArgumentError, lambda: mpicoll.allgather(x, counts=[99] * comm.size, comm=comm),
                      "counts")


@multi
def test_argument_rejected_on_one_rank_fails_everywhere(comm):
    dtype = np.int32 if comm.rank == 1 else np.float32
    x = np.ones(8, dtype=dtype)
    if comm.rank == 1:
        raises_everywhere(comm, DtypeError, lambda: mpicoll.allreduce(x, "avg", comm=comm), "avg")
    else:
        raises_everywhere(comm, PeerError, lambda: mpicoll.allreduce(x, "avg", comm=comm),
                          "rank 1 rejected the call", "DtypeError")
    out = np.ones(8, dtype=np.float64 if comm.rank == 0 else np.float32)
    y = np.ones(8, dtype=np.float32)
    expected = DtypeError if comm.rank == 0 else PeerError
    raises_everywhere(comm, expected, lambda: mpicoll.allreduce(y, comm=comm, out=out), "float64")
    z = mpicoll.allreduce(np.ones(3, dtype=np.int64), comm=comm)  # the communicator still works
    assert_all(comm.mpi, (z == comm.size).all(), "allreduce after the error")


@multi
def test_mismatched_segment_size(comm):
    with mpicoll.config.override(segment_bytes=4096 * (1 + comm.rank % 2)):
        raises_everywhere(comm, MismatchError, lambda: mpicoll.allreduce(np.ones(10000), comm=comm),
                          "segment sizes", "MPICOLL_SEGMENT_BYTES")


def test_in_place_refused_where_sizes_differ(comm):
    x = np.ones(2 * comm.size, dtype=np.float32)
    raises_everywhere(comm, ArgumentError, lambda: mpicoll.reduce_scatter(x, comm=comm, out=x[:2]), "overlaps")
    raises_everywhere(comm, ArgumentError,
                      lambda: mpicoll.allgather(x[:1], counts=[1] * comm.size, comm=comm, out=x[: comm.size]),
                      "overlaps")


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix, on purpose
def test_argument_types(comm):
    x = np.arange(6, dtype=np.float64)
    got = mpicoll.broadcast(x, np.int64(0), comm=comm)  # numpy integers are fine roots
    assert_all(comm.mpi, bool((got == x).all()), "numpy int root")
    raises_everywhere(comm, ArgumentError, lambda: mpicoll.reduce_scatter(x, counts=[6.0] + [0.0] * (comm.size - 1),
                                                                          comm=comm), "integers")
    raises_everywhere(comm, ArgumentError, lambda: mpicoll.allreduce(np.ma.masked_array(x), comm=comm),
                      "masked array")
    matrix = np.asmatrix(x.reshape(2, 3))
    got = mpicoll.allreduce(matrix, comm=comm)  # subclasses are used as plain arrays
    assert_all(comm.mpi, got.shape == (2, 3) and bool((np.asarray(got) == x.reshape(2, 3) * comm.size).all()),
               "np.matrix input")


def test_validation_off_skips_the_exchange(comm, monkeypatch):
    from mpicoll.collectives import validate

    def forbidden(*args, **kwargs):
        raise AssertionError("exchange called although validate=False")

    monkeypatch.setattr(validate, "exchange", forbidden)
    with mpicoll.config.override(validate=False):
        y = mpicoll.allreduce(np.ones(5, dtype=np.int32), comm=comm)
    assert_all(comm.mpi, (y == comm.size).all(), "result with validate=False")


def test_non_finite_inputs_are_reported_with_rank_and_index(comm):
    from mpicoll.errors import NonFiniteError

    x = np.ones(50, dtype=np.float32)
    if comm.rank == comm.size - 1:
        x[17] = np.nan
        x[30] = np.inf
    with mpicoll.config.override(check_finite=True):
        bad = comm.size - 1
        if comm.rank == bad:
            raises_everywhere(comm, NonFiniteError, lambda: mpicoll.allreduce(x, comm=comm),
                              f"rank {bad}'s input holds nan at flat index 17", "2 non-finite")
        else:
            raises_everywhere(comm, PeerError, lambda: mpicoll.allreduce(x, comm=comm), f"rank {bad}",
                              "NonFiniteError")
        clean = np.ones(5, dtype=np.float32)
        y = mpicoll.allreduce(clean, comm=comm)
        assert_all(comm.mpi, bool((y == comm.size).all()), "clean input passes the check")
