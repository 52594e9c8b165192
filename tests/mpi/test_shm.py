"""The shared-memory all-reduce: staging and zero-copy paths, bitwise alike on every rank."""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import assert_all, assert_close_all, assert_same_on_all_ranks, mpi_allreduce, rank_input

import mpicoll
from mpicoll.transport.shared import SharedArray, window_of


@pytest.mark.parametrize("n", [1, 5, 1000, 300_001])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_zero_copy_equals_staging_and_mpi(comm, n, dtype):
    x = rank_input(n, comm.rank, dtype, "float" if dtype.startswith("float") else "int", seed=n)
    staged = mpicoll.allreduce(x, algorithm="shm", comm=comm)
    shared = mpicoll.shared_empty(n, dtype, comm=comm)
    assert isinstance(shared, SharedArray) and window_of(shared) is not None
    shared[...] = x
    result = mpicoll.allreduce(shared, out=shared, algorithm="shm", comm=comm)
    assert_same_on_all_ranks(comm.mpi, shared, "zero-copy result")
    assert_all(comm.mpi, np.array_equal(shared, staged), "zero-copy and staging give the same bits")
    assert_all(comm.mpi, np.shares_memory(result, shared), "in place: the result is the shared array")
    want = mpi_allreduce(comm.mpi, x.astype(np.float64), "sum")
    assert_close_all(comm.mpi, shared.astype(np.float64), want, rtol=1e-5, atol=1e-4)


def test_mixed_shared_and_private_inputs_take_the_staging_path_everywhere(comm):
    x = rank_input(4097, comm.rank, "float32", "float", seed=1)
    shared = mpicoll.shared_empty(4097, np.float32, comm=comm)  # collective: every rank makes one
    buf = shared if comm.rank % 2 == 0 else np.empty(4097, np.float32)  # ... odd ranks pass a private one
    buf[...] = x
    mpicoll.allreduce(buf, out=buf, algorithm="shm", comm=comm)
    assert_same_on_all_ranks(comm.mpi, buf, "mixed inputs")
    assert_all(comm.mpi, np.array_equal(buf, mpicoll.allreduce(x, algorithm="ring", comm=comm))
               or comm.size > 2, "two ranks: one order of additions, the ring's")


def test_views_at_an_offset_and_repeated_calls_of_growing_sizes(comm):
    pool = mpicoll.shared_empty(1 << 16, np.float32, comm=comm)
    for step, n in enumerate([10, 1 << 12, 1 << 15, 3, 1 << 16]):
        lo = (1 << 16) - n  # the same place on every rank, not at the start of the window
        part = pool[lo:]
        part[...] = rank_input(n, comm.rank, "float32", "float", seed=step)
        want = mpicoll.allreduce(part.copy(), algorithm="shm", comm=comm)
        mpicoll.allreduce(part, out=part, algorithm="shm", comm=comm)
        assert_all(comm.mpi, np.array_equal(part, want), f"n={n} at offset {lo}")


def test_two_dimensional_average(comm):
    a = mpicoll.shared_empty((64, 33), np.float32, comm=comm)
    a[...] = comm.rank + 1
    mpicoll.allreduce(a, "avg", out=a, algorithm="shm", comm=comm)
    assert_all(comm.mpi, np.allclose(a, (comm.size + 1) / 2), "mean of 1..p")


def check_buckets_in_shared_memory(c) -> None:
    """GradientBuckets(algorithm="shm") on ``c``: fusion buffers in shared windows, results equal
    to the staging path's bits on every rank."""
    from mpicoll.aggregation import GradientBuckets

    arrays = {f"w{i}": rank_input(n, c.rank, "float32", "float", seed=i) for i, n in enumerate([300, 70_000, 5])}
    expected = {k: mpicoll.allreduce(v, "avg", algorithm="shm", comm=c) for k, v in arrays.items()}
    buckets = GradientBuckets(arrays, bucket_bytes=64 << 10, algorithm="shm", comm=c)
    assert_all(c.mpi, all(window_of(b.buffer) is not None for b in buckets.buckets), "shared fusion buffers")
    for name in arrays:
        buckets.ready(name)
    buckets.wait()
    for name, value in arrays.items():
        assert_same_on_all_ranks(c.mpi, value, name)
        assert_all(c.mpi, np.array_equal(value, expected[name]), f"{name}: zero copy equals staging")


def test_gradient_buckets_reduce_in_shared_memory(comm):
    check_buckets_in_shared_memory(comm)


def test_compressed_buckets_on_shared_buffers_take_the_compressed_path(comm):
    from mpicoll import compression
    from mpicoll.aggregation import GradientBuckets

    arrays = {"w": rank_input(5000, comm.rank, "float32", "float", seed=3)}
    buckets = GradientBuckets(arrays, algorithm="shm", compressor=compression.get("fp16"), comm=comm)
    buckets.ready("w")
    buckets.wait()
    assert_same_on_all_ranks(comm.mpi, arrays["w"], "fp16 on a shared fusion buffer")


LAYOUTS = {"one host": lambda r: 0, "pairs": lambda r: r // 2, "alternating": lambda r: r % 2,
           "one rank per host": lambda r: r}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("n", [1, 7, 1000, 100_003])
def test_across_hosts_staging_and_zero_copy(layout, n):
    """``shm`` across (simulated) hosts: hierarchical with shared-memory steps inside each host."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    hosts = tuple(LAYOUTS[layout](r) for r in range(world.Get_size()))
    with mpicoll.Comm(world, hosts=hosts) as c:
        x = rank_input(n, c.rank, "float64", "float", seed=n)
        staged = mpicoll.allreduce(x, algorithm="shm", comm=c)
        assert_same_on_all_ranks(c.mpi, staged, f"{layout}: staging result")
        want = mpi_allreduce(c.mpi, x, "sum")
        assert_close_all(c.mpi, staged, want, rtol=1e-12, atol=1e-9)
        shared = mpicoll.shared_empty(n, np.float64, comm=c)
        assert_all(c.mpi, window_of(shared) is not None, "shared_empty across hosts")
        shared[...] = x
        mpicoll.allreduce(shared, out=shared, algorithm="shm", comm=c)
        assert_all(c.mpi, np.array_equal(shared, staged), f"{layout}: zero copy and staging give the same bits")
        mixed = shared if c.rank % 2 else x.copy()  # some ranks in place on shared memory, some not
        mixed[...] = x
        mpicoll.allreduce(mixed, out=mixed, algorithm="shm", comm=c)
        assert_all(c.mpi, np.array_equal(mixed, staged), f"{layout}: mixed inputs")
        avg = mpicoll.allreduce(x, "avg", algorithm="shm", comm=c)
        assert_close_all(c.mpi, avg, want / c.size, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("layout", ["pairs", "one rank per host"])
def test_gradient_buckets_across_hosts(layout):
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    with mpicoll.Comm(world, hosts=tuple(LAYOUTS[layout](r) for r in range(world.Get_size()))) as c:
        check_buckets_in_shared_memory(c)


def test_auto_takes_shm_where_a_tuned_table_says_so(comm, tmp_path_factory):
    """A table tuned here may name shm; auto then takes it for host arrays, and ring for GPU ones."""
    import json

    from mpicoll.collectives.internal import auto, choose_for

    table = json.loads(auto.bundled_table_text())
    table["allreduce"] = {"default": [[None, "shm"]]}
    path = tmp_path_factory.mktemp(f"table{comm.rank}") / "auto.json"
    path.write_text(auto.format_table(table))
    x = rank_input(70_000, comm.rank, "float64", "float", seed=5)
    with mpicoll.config.override(auto_table=str(path)):
        assert choose_for("allreduce", x.nbytes, comm, flat=True) == "shm"
        assert choose_for("allreduce", x.nbytes, comm, flat=True, host=False) == "ring"
        got = mpicoll.allreduce(x, comm=comm)
    auto.reset()
    assert_all(comm.mpi, np.array_equal(got, mpicoll.allreduce(x, algorithm="shm", comm=comm)), "auto took shm")


@pytest.mark.parametrize("n", [1, 3, 17, 1000])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("op", ["sum", "prod", "min", "max"])
def test_streamed_staging_over_many_chunks_in_rank_order(comm, monkeypatch, n, dtype, op):
    """Chunks of 64 bytes (many per array, a short last one, sub-blocks empty where a chunk has
    fewer elements than ranks): every element is ``x_0 op x_1 op ... op x_{p-1}`` in the dtype,
    on every rank, into a new array, into ``out=`` and in place on a private array."""
    from mpicoll.collectives import shm

    monkeypatch.setattr(shm, "CHUNK_BYTES", 64)  # every rank: the chunking must agree
    kind = "float" if dtype.startswith("float") else "int"
    x = rank_input(n, comm.rank, dtype, kind, seed=n)
    if op == "prod":
        x = np.where(np.abs(x) > 2, np.sign(x), x).astype(dtype)  # keep the products finite
    every = comm.mpi.allgather(x)
    ufunc = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum}[op]
    want = every[0].copy()
    for k in range(1, comm.size):
        want = ufunc(want, every[k])
    got = mpicoll.allreduce(x, op, algorithm="shm", comm=comm)
    assert_all(comm.mpi, got.tobytes() == want.tobytes(), f"new array: not the rank-order {op}")
    out = np.full_like(x, 7)
    mpicoll.allreduce(x, op, out=out, algorithm="shm", comm=comm)
    assert_all(comm.mpi, out.tobytes() == want.tobytes(), "out=")
    inplace = x.copy()
    mpicoll.allreduce(inplace, op, out=inplace, algorithm="shm", comm=comm)
    assert_all(comm.mpi, inplace.tobytes() == want.tobytes(), "in place on a private array")
