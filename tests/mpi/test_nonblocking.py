"""Non-blocking collectives and gradient buckets, on every rank count."""

from __future__ import annotations

import time

import numpy as np
import pytest
from mpitools import assert_all, assert_close_all, assert_equal_all, mpi_allreduce, rank_input

import mpicoll
from mpicoll import compression
from mpicoll.errors import MismatchError, PeerError


def test_many_handles_complete_in_any_wait_order(comm):
    sizes = [1, 7, 1000, 100003, 33, 65536, 5, 4099]
    inputs = [rank_input(n, comm.rank, "int64", seed=i) for i, n in enumerate(sizes)]
    algorithms = ["ring", "tree", "recursive_doubling", "rabenseifner", "native", "auto", "ring", "tree"]
    handles = [mpicoll.iallreduce(x, algorithm=a, comm=comm) for x, a in zip(inputs, algorithms, strict=True)]
    handles.append(mpicoll.ibroadcast(inputs[2], 0, comm=comm))
    handles.append(mpicoll.iallgather(inputs[1], comm=comm))
    order = [5, 0, 9, 3, 8, 1, 7, 2, 6, 4]  # neither submission order nor its reverse
    results = {i: handles[i].wait(timeout=120) for i in order}
    assert_all(comm.mpi, all(h.done and h.test() for h in handles), "every handle done")
    for i, x in enumerate(inputs):
        assert_equal_all(comm.mpi, results[i], mpi_allreduce(comm.mpi, x, "sum"), f"handle {i}")
    assert_equal_all(comm.mpi, results[8], rank_input(1000, 0, "int64", seed=2), "ibroadcast")
    assert_equal_all(comm.mpi, results[9], np.stack([rank_input(7, r, "int64", seed=1) for r in range(comm.size)]))


def test_blocking_calls_meanwhile_do_not_interfere(comm):
    x = rank_input(50000, comm.rank, "int64")
    handle = mpicoll.iallreduce(x, comm=comm)
    blocking = mpicoll.allreduce(x, algorithm="tree", comm=comm)  # on the caller's communicator
    assert_equal_all(comm.mpi, handle.wait(timeout=120), blocking)


def test_compressed_iallreduce(comm):
    x = rank_input(3000, comm.rank, "float32", "int")
    handle = mpicoll.compressed_iallreduce(x, compression.get("none"), comm=comm, average=False)
    assert_equal_all(comm.mpi, handle.wait(timeout=120), mpicoll.allreduce(x, comm=comm))


def test_errors_surface_at_wait_on_every_rank(comm):
    if comm.size < 2:
        pytest.skip("needs two ranks to disagree")
    x = np.ones(10 + (comm.rank == 1), dtype=np.float32)
    handle = mpicoll.iallreduce(x, comm=comm)
    with pytest.raises(MismatchError, match="count"):
        handle.wait(timeout=120)
    y = np.ones(4, dtype=np.int32 if comm.rank == 0 else np.float32)
    handle = mpicoll.iallreduce(y, "avg", comm=comm)
    with pytest.raises((PeerError, mpicoll.DtypeError)):
        handle.wait(timeout=120)
    ok = mpicoll.iallreduce(np.ones(3), comm=comm).wait(timeout=120)  # the engine carries on
    assert_all(comm.mpi, bool((ok == comm.size).all()), "engine alive after errors")


@pytest.mark.parametrize("compressor", [None, "fp16"])
def test_buckets_match_per_array_allreduce(comm, compressor):
    rng = np.random.default_rng(7)
    dtypes = ["float32", "float64", "float32", "float16"]
    specs = [(f"p{i}", int(rng.integers(1, 3000)), dtypes[i % 4]) for i in range(200)]
    arrays = {name: rank_input(n, comm.rank, dtype, "int", seed=i).reshape(-1) for i, (name, n, dtype) in
              enumerate(specs)}
    originals = {k: v.copy() for k, v in arrays.items()}
    codec = None if compressor is None else compression.get(compressor)
    buckets = mpicoll.GradientBuckets(arrays, bucket_bytes=16 << 10, compressor=codec, comm=comm)
    assert_all(comm.mpi, 10 < len(buckets.buckets) < 200, f"{len(buckets.buckets)} buckets")
    assert_all(comm.mpi, all(len({arrays[n].dtype for n in b.names}) == 1 for b in buckets.buckets), "one dtype")
    ready_order = list(arrays)[::-1] if comm.rank % 2 == 0 else list(np.random.default_rng(comm.rank).permutation(
        list(arrays)))  # ranks mark arrays ready in different orders
    for step in range(2):  # the same buckets serve every step
        for name in ready_order:
            buckets.ready(name)
        buckets.wait()
        for name, original in originals.items():
            want = mpi_allreduce(comm.mpi, original, "avg")
            if compressor is None:
                assert_close_all(comm.mpi, arrays[name], want, rtol=1e-3 if original.dtype == np.float16 else 1e-6,
                                 atol=1e-3, what=f"{name} step {step}")
            else:
                assert_close_all(comm.mpi, arrays[name], want, rtol=2e-3, atol=2e-3, what=f"{name} step {step}")
            arrays[name][...] = original


def test_bucket_misuse_is_reported(comm):
    buckets = mpicoll.GradientBuckets({"a": np.ones(3), "b": np.ones(4)}, comm=comm)
    with pytest.raises(mpicoll.ArgumentError, match="no array named 'c'"):
        buckets.ready("c")
    with pytest.raises(mpicoll.ArgumentError, match="never marked ready"):
        buckets.wait()
    buckets.allreduce_all()
    assert_all(comm.mpi, bool((buckets.arrays["a"] == 1).all()), "mean of ones")


def test_a_faulty_callback_changes_nothing(comm):
    x = rank_input(1000, comm.rank, "int64")
    handle = mpicoll.iallreduce(x, comm=comm)
    seen = []
    handle.add_done_callback(lambda h: 1 / 0)
    handle.add_done_callback(lambda h: seen.append(h.done))
    with pytest.warns(UserWarning, match="ZeroDivisionError"):
        result = handle.wait(timeout=120)
        late = mpicoll.iallreduce(x, comm=comm)  # the engine is alive
        late.add_done_callback(lambda h: 1 / 0)
        assert_equal_all(comm.mpi, late.wait(timeout=120), result)
    assert_equal_all(comm.mpi, result, mpi_allreduce(comm.mpi, x, "sum"))
    assert seen == [True]


def test_queued_collectives_keep_the_settings_they_were_started_with(comm):
    from mpicoll.collectives.nonblocking import start

    gate = __import__("threading").Event()
    blocker = start(comm, "blocker", lambda c: gate.wait(60))  # holds the engine
    with mpicoll.config.override(segment_bytes=12345 * 4, validate=False):
        probe = start(comm, "probe", lambda c: (mpicoll.config.get("segment_bytes"), mpicoll.config.get("validate")))
        x = rank_input(100003, comm.rank, "int64")
        reduced = mpicoll.iallreduce(x, algorithm="ring", comm=comm)
    gate.set()  # the override is over before either runs
    blocker.wait(timeout=60)
    assert probe.wait(timeout=60) == (12345 * 4, False)
    assert_equal_all(comm.mpi, reduced.wait(timeout=120), mpi_allreduce(comm.mpi, x, "sum"))
    assert mpicoll.config.get("validate") is True


def test_run_in_order_meets_a_peers_nonblocking_call(comm):
    """A blocking call run in order with the engine (the torch backend's blocking calls) matches
    the same collective started non-blocking on another rank, in both directions."""
    from mpicoll.collectives.nonblocking import run_in_order

    x, y = rank_input(3000, comm.rank, "int64"), rank_input(5, comm.rank, "int64", seed=1)

    def blocking(array):
        return run_in_order(comm, "allreduce", lambda c: mpicoll.allreduce(array, comm=c))

    if comm.rank % 2:
        first = blocking(x)
        second = mpicoll.iallreduce(y, comm=comm).wait(timeout=120)
    else:
        handle = mpicoll.iallreduce(x, comm=comm)
        second = blocking(y)  # queued behind the handle: same communicator, same order
        first = handle.wait(timeout=120)
    assert_equal_all(comm.mpi, first, mpi_allreduce(comm.mpi, x, "sum"), "first")
    assert_equal_all(comm.mpi, second, mpi_allreduce(comm.mpi, y, "sum"), "second")


def test_freeing_a_communicator_ends_its_engine_which_then_refuses_work(comm):
    from mpicoll.collectives.nonblocking import engine_of
    from mpicoll.errors import UsageError

    x = rank_input(1000, comm.rank, "int64")
    c = mpicoll.Comm(comm.mpi)
    assert_equal_all(comm.mpi, mpicoll.iallreduce(x, comm=c).wait(timeout=120), mpi_allreduce(comm.mpi, x, "sum"))
    engine = engine_of(c)
    c.free()  # collective: the engine finishes its queue, its thread ends, its communicator is freed
    assert_all(comm.mpi, not engine._thread.is_alive(), "the engine's thread has ended")
    with pytest.raises(UsageError, match="stopped"):
        engine.submit("allreduce", lambda c: None)
    engine.close()  # a second close does nothing


def test_the_engine_completes_a_collective_nobody_waits_for(comm):
    """Progress never depends on the caller: while it runs Python (holding the GIL but for the
    interpreter's switches) and never calls wait() or test(), the collective completes."""
    x = rank_input(200_003, comm.rank, "int64")
    handle = mpicoll.iallreduce(x, algorithm="ring", comm=comm)
    deadline, busy = time.monotonic() + 60, 0
    while not handle.done and time.monotonic() < deadline:
        busy += sum(range(1000))  # the caller's own work: pure Python
    assert_all(comm.mpi, handle.done, "completed without wait()")
    assert_equal_all(comm.mpi, handle.wait(timeout=0), mpi_allreduce(comm.mpi, x, "sum"))
