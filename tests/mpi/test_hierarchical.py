"""Hierarchical all-reduce on every split of the ranks into hosts (``host_layout`` on one machine;
tests/test_netbed.py runs it across real network-namespace hosts)."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI
from mpitools import assert_all, assert_close_all, assert_equal_all, mpi_allreduce, rank_input

import mpicoll
from mpicoll import compression


def compositions(n: int) -> list[str]:
    """Every way to write n as ordered ranks per host, as a layout string ("2,1", "1,2", ...)."""
    if n == 0:
        return [""]
    out = []
    for first in range(1, n + 1):
        out += [f"{first}" + (f",{rest}" if rest else "") for rest in compositions(n - first)]
    return out


LAYOUTS = compositions(MPI.COMM_WORLD.Get_size())


@pytest.fixture(params=LAYOUTS)
def comm(request):
    with mpicoll.config.override(host_layout=request.param, segment_bytes=4096), mpicoll.Comm() as c:
        yield c


def test_hosts_follow_the_layout(comm):
    sizes = [int(v) for v in mpicoll.config.get("host_layout").split(",")]
    assert comm.hosts == tuple(h for h, n in enumerate(sizes) for _ in range(n))
    several = len(sizes) > 1 and max(sizes) > 1
    assert comm.several_ranks_on_several_hosts == several


@pytest.mark.parametrize("dtype", ["int64", "int32", "float16"])
def test_bitwise_equal_to_mpi_allreduce_on_integers(comm, dtype):
    for count in (1, 2, 5, 1000, 50003):
        x = rank_input(count, comm.rank, dtype)
        want = mpi_allreduce(comm.mpi, x, "sum")
        assert_equal_all(comm.mpi, mpicoll.allreduce(x, algorithm="hierarchical", comm=comm), want, f"n={count}")
        y = x.copy()
        mpicoll.allreduce(y, algorithm="hierarchical", comm=comm, out=y)
        assert_equal_all(comm.mpi, y, want, f"in place, n={count}")


@pytest.mark.parametrize("op", ["sum", "max", "prod", "avg"])
def test_floats_agree_with_float64_and_across_ranks(comm, op):
    x = rank_input(20011, comm.rank, "float64" if op == "prod" else "float32", "normal", seed=3)
    got = mpicoll.allreduce(x, op, algorithm="hierarchical", comm=comm)
    want = mpi_allreduce(comm.mpi, x.astype(np.float64), op)
    assert_close_all(comm.mpi, got, want, rtol=1e-5, atol=1e-5)
    assert_equal_all(comm.mpi, got, comm.mpi.bcast(got, root=0), "identical on every rank")


def test_auto_picks_hierarchical_only_across_hosts_with_several_ranks(comm):
    x = rank_input(4099, comm.rank, "int64")
    assert_equal_all(comm.mpi, mpicoll.allreduce(x, comm=comm), mpi_allreduce(comm.mpi, x, "sum"))
    from mpicoll.collectives.auto import choose_for

    name = choose_for("allreduce", x.nbytes, comm)
    assert_all(comm.mpi, (name == "hierarchical") == comm.several_ranks_on_several_hosts, f"auto chose {name}")


@pytest.mark.parametrize(("name", "params"), [("topk", {"ratio": 0.1}), ("powersgd", {"rank": 2})])
def test_compressed_hierarchical(comm, name, params):
    x = rank_input(3001, comm.rank, "float32", "int")
    exact = mpicoll.allreduce(x, comm=comm) / np.float32(comm.size)
    got = mpicoll.compressed_allreduce(x, compression.get("none"), comm=comm, algorithm="hierarchical")
    assert_equal_all(comm.mpi, got, exact, "lossless compressor: exact mean")
    codec = compression.ErrorFeedback(compression.get(name, **params))
    got = mpicoll.compressed_allreduce(x, codec, key="w", comm=comm, algorithm="hierarchical")
    assert_equal_all(comm.mpi, got, comm.mpi.bcast(got, root=0), "identical on every rank")
    hosts = len(set(comm.hosts))
    if hosts == 1:  # nothing crosses a network: nothing is compressed
        assert_equal_all(comm.mpi, got, exact, "one host: exact")
    else:
        assert_all(comm.mpi, bool(codec.residuals) == (comm.rank in _shard_owners(comm)), "residuals per shard")


def test_powersgd_keeps_the_tensor_shapes_across_hosts(comm):
    """``auto`` runs powersgd with hierarchical sums of P and Q, so ``parts`` still holds: the bias
    arrives exact on any layout; the hierarchical compressed path cannot use parts and says so."""
    from mpicoll.errors import UnsupportedError

    weight = rank_input(40 * 30, comm.rank, "float32", "float", seed=700)
    bias = rank_input(30, comm.rank, "float32", "int", seed=701)
    packed = np.concatenate([weight, bias])
    codec = compression.ErrorFeedback(compression.get("powersgd", rank=2))
    got = mpicoll.compressed_allreduce(packed, codec, key="b", comm=comm, average=False, parts=[(40, 30), (30,)])
    assert_equal_all(comm.mpi, got[1200:], mpicoll.allreduce(bias, comm=comm, algorithm="native"), "bias")
    assert_equal_all(comm.mpi, got, comm.mpi.bcast(got, root=0), "identical on every rank")
    with pytest.raises(UnsupportedError, match="parts"):
        mpicoll.compressed_allreduce(packed, codec, key="c", comm=comm, algorithm="hierarchical",
                                     parts=[(40, 30), (30,)])


def _shard_owners(comm) -> set[int]:
    from mpicoll.collectives.hierarchical import hierarchy

    owners = comm.mpi.allgather(bool(hierarchy(comm).cross))
    return {r for r, owns in enumerate(owners) if owns}
