"""compressor="auto": the cost model's codec choice per bucket, identical on every rank."""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import assert_all, assert_same_on_all_ranks, mpi_allreduce, rank_input

from mpicoll.aggregation import AutoCodec, GradientBuckets
from mpicoll.errors import ArgumentError
from mpicoll.model import CodecRates, Link, Machine


def machine(gbit: float) -> Machine:
    """A hand-made model: ``gbit`` Gbit/s between (and inside) hosts, codecs as measured here."""
    link = Link(50e-6, 8e-9 / gbit)
    return Machine({"intra": link, "inter": link}, gamma=1 / 5e9, flops=2e10,
                   codecs={"fp16": CodecRates("summable", 0.5, 2e9, 2e9, widen=2.0),
                           "powersgd": CodecRates("lowrank", 0.0, 1e30, 1e30, rank=4)})


def arrays(rank: int, step: int) -> dict[str, np.ndarray]:
    return {f"w{i}": rank_input(n, rank, "float32", "float", seed=10 * step + i).reshape(shape)
            for i, (n, shape) in enumerate([(4096, (64, 64)), (300, (300,)), (65536, (256, 256))])}


def test_every_rank_takes_rank_zeros_model_and_the_same_decisions(comm):
    # each rank is handed a different model; prepare() makes rank 0's the one everybody decides with
    auto = AutoCodec(["fp16", "powersgd"], model=machine(0.02 if comm.rank == 0 else 400.0))
    auto.prepare(comm)
    sizes = [4 << 10, 1 << 20, 64 << 20]
    for size in sizes:
        auto.resolve(comm, size, size)
    gathered = comm.mpi.allgather([auto.decisions[size] for size in sizes])
    assert_all(comm.mpi, all(g == gathered[0] for g in gathered), f"decisions per rank {gathered}")
    if comm.size > 1:
        assert_all(comm.mpi, gathered[0][-1] != "none", f"0.02 Gbit/s, 64 MiB: compress ({gathered[0]})")


def test_a_fast_link_keeps_buckets_uncompressed_and_exact(comm):
    auto = AutoCodec(model=machine(400.0))
    mine = arrays(comm.rank, 0)
    buckets = GradientBuckets(mine, bucket_bytes=64 << 10, compressor=auto, comm=comm)
    expected = {k: mpi_allreduce(comm.mpi, v, "sum") / np.float32(comm.size) for k, v in mine.items()}
    for name in mine:
        buckets.ready(name)
    buckets.wait()
    assert_all(comm.mpi, set(auto.decisions.values()) <= {"none"}, f"decisions {auto.decisions}")
    for name, value in mine.items():
        assert_same_on_all_ranks(comm.mpi, value, name)
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)


def test_a_slow_link_compresses_identically_on_every_rank_and_checkpoints(comm):
    auto = AutoCodec(["fp16"], model=machine(0.01), margin=0.0)
    buckets = GradientBuckets(arrays(comm.rank, 0), bucket_bytes=64 << 10, compressor=auto, comm=comm,
                              warmup_steps=1)
    for step in range(3):
        for name, value in arrays(comm.rank, step).items():
            buckets.arrays[name][...] = value
            buckets.ready(name)
        buckets.wait()
        for name, value in buckets.arrays.items():
            assert_same_on_all_ranks(comm.mpi, value, f"step {step} {name}")
        if step == 0:
            assert_all(comm.mpi, auto.decisions == {}, "nothing decided during the dense warm-up")
    if comm.size > 1:
        assert_all(comm.mpi, set(auto.decisions.values()) == {"fp16"}, f"decisions {auto.decisions}")
    again = AutoCodec(["fp16"], model=machine(400.0))
    again.load_state_dict(auto.state_dict())
    assert_all(comm.mpi, again.decisions == auto.decisions, "the restored decisions are kept, not re-decided")


def test_a_probe_gives_every_rank_the_same_model(comm):
    auto = AutoCodec(["fp16"])
    model = auto.prepare(comm)
    documents = comm.mpi.allgather(model.to_json())
    assert_all(comm.mpi, all(d == documents[0] for d in documents), "one model on every rank")
    assert_all(comm.mpi, model.codecs["fp16"].ratio == pytest.approx(0.5, abs=0.01), "fp16 halves the bytes")


def test_the_native_curve_stops_where_the_budget_does(comm):
    """The probe observes ``MPI_Allreduce`` size by size while the size before it says the next fits
    the budget; every rank stops at the same size (the times are the slowest rank's)."""
    from mpicoll.model.probe import _observe_native

    sizes = (4 << 10, 64 << 10, 1 << 20)
    every = _observe_native(comm, sizes, repeats=1, budget=1e6)
    assert_all(comm.mpi, [b for b, _ in every] == [float(s) for s in sizes] and all(t > 0 for _, t in every),
               f"an ample budget observes every size: {every}")
    first = _observe_native(comm, sizes, repeats=1, budget=1e-12)
    assert_all(comm.mpi, [b for b, _ in first] == [float(sizes[0])], f"a spent budget stops after one: {first}")
    assert_same_on_all_ranks(comm.mpi, np.array(every + first, dtype=np.float64), "one curve on every rank")


def test_a_missing_model_file_fails_every_rank(comm):
    with pytest.raises(ArgumentError, match="cannot read the machine model"):
        AutoCodec(model="/nonexistent/model.json").prepare(comm)


def test_bad_arguments(comm):
    with pytest.raises(ArgumentError, match="unknown codec"):
        AutoCodec(["zstd"])
    with pytest.raises(ArgumentError, match="before prepare"):
        AutoCodec(model=machine(1.0)).resolve(comm, "k", 100)
    with pytest.raises(ArgumentError, match="compressor must be"):
        GradientBuckets({"a": np.zeros(3, np.float32)}, compressor="fastest")
