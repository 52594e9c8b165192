"""Payload sizes carried by the agreement of a compressed all-reduce (issue 20): the same results as
sizes gathered in a round of their own, and announcements that lie are refused on every rank."""

from __future__ import annotations

import numpy as np
import pytest

import mpicoll
from mpicoll import compression
from mpicoll.collectives.internal import get_algorithm
from mpicoll.errors import PayloadError

PATHS = [("topk", {"ratio": 0.05}, "sparse_allgather"), ("int8", {}, "allgather_decode"),
         ("sign", {}, "allgather_decode")]


@pytest.fixture
def comm():
    with mpicoll.Comm() as c:
        yield c


def data(comm, count=3001):
    return (np.arange(count, dtype=np.float32) * (comm.rank + 1)) % 13 - 6


@pytest.mark.parametrize(("name", "params", "algorithm"), PATHS)
def test_carried_sizes_give_the_gathered_result(comm, name, params, algorithm):
    x = data(comm)
    with mpicoll.config.override(validate=True):
        carried = mpicoll.compressed_allreduce(x, compression.get(name, **params), key="w", comm=comm,
                                               algorithm=algorithm)
    with mpicoll.config.override(validate=False):  # no agreement: the path gathers the sizes itself
        gathered = mpicoll.compressed_allreduce(x, compression.get(name, **params), key="w", comm=comm,
                                                algorithm=algorithm)
    assert carried.tobytes() == gathered.tobytes()
    assert comm.mpi.allgather(carried.tobytes()) == [carried.tobytes()] * comm.size


@pytest.mark.parametrize("lie", ["above the bound", "not the payload's size", "negative"])
@pytest.mark.parametrize(("name", "params", "algorithm"), PATHS)
def test_an_announcement_that_lies_is_refused_everywhere(comm, monkeypatch, name, params, algorithm, lie):
    path = get_algorithm("compressed_allreduce", algorithm)
    prepare = path.prepare
    codec = compression.get(name, **params)

    def lying(*args, **kwargs):
        prepared = prepare(*args, **kwargs)
        bound = codec.payload_bound(prepared.ctx)
        prepared.announce = {"above the bound": bound + 1, "not the payload's size": max(0, prepared.announce - 1),
                             "negative": -5}[lie]
        return prepared

    if comm.rank == comm.size - 1:
        monkeypatch.setattr(path, "prepare", lying)
    with mpicoll.config.override(validate=True), pytest.raises(PayloadError, match="announced"):
        mpicoll.compressed_allreduce(data(comm), codec, key="w", comm=comm, algorithm=algorithm)
    monkeypatch.undo()
    x = data(comm)  # the communicator and the compressor still work, on every rank
    got = mpicoll.compressed_allreduce(x, codec, key="w", comm=comm, algorithm=algorithm)
    assert comm.mpi.allgather(got.tobytes()) == [got.tobytes()] * comm.size


def test_a_carrying_collective_against_a_plain_one_is_a_mismatch(comm):
    """The agreement's rows have one length whether a collective carries a value or not, so a rank
    in compressed_allreduce meeting ranks in allreduce gets the usual MismatchError, not an MPI error."""
    if comm.size < 2:
        pytest.skip("needs two ranks")
    x = data(comm)
    codec = compression.get("topk", ratio=0.05)
    with mpicoll.config.override(validate=True), pytest.raises(mpicoll.MismatchError, match="different collectives"):
        if comm.rank == 0:
            mpicoll.compressed_allreduce(x, codec, key="w", comm=comm)
        else:
            mpicoll.allreduce(x, comm=comm)
    assert mpicoll.allreduce(x, comm=comm).tobytes() == comm.mpi.bcast(mpicoll.allreduce(x, comm=comm).tobytes())


@pytest.mark.parametrize("phase", ["chunk", "owner"])
def test_a_fixed_size_payload_of_another_size_is_refused_everywhere(comm, monkeypatch, phase):
    """two_phase exchanges no sizes for fixed-size codecs: a payload unlike the codec's size (a bug or
    another version on one rank) is replaced by zeros of the right size, and every rank raises."""
    codec = compression.get("int8")
    real = codec.compress

    def short(x, key=None, **kwargs):
        payload, ctx = real(x, key, **kwargs)
        return (payload[:-1] if isinstance(key, tuple) and phase in key else payload), ctx

    if comm.rank == comm.size - 1:
        monkeypatch.setattr(codec, "compress", short)
    with pytest.raises(PayloadError):
        mpicoll.compressed_allreduce(data(comm), codec, key="w", comm=comm, algorithm="two_phase")
    monkeypatch.undo()
    got = mpicoll.compressed_allreduce(data(comm), codec, key="w", comm=comm, algorithm="two_phase")
    assert comm.mpi.allgather(got.tobytes()) == [got.tobytes()] * comm.size
