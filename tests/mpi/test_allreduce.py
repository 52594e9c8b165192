"""allreduce: every algorithm against MPI_Allreduce and a float64 reference, on any rank count."""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import (
    all_inputs,
    assert_all,
    assert_close_all,
    assert_equal_all,
    assert_same_on_all_ranks,
    mpi_allreduce,
    rank_input,
    reference,
)

import mpicoll

ALGORITHMS = ["ring", "tree", "recursive_doubling", "rabenseifner", "shm", "native", "auto"]
DTYPES = ["float16", "float32", "float64", "int32", "int64"]
OPS = ["sum", "prod", "min", "max", "avg"]


def counts_for(size: int) -> list[int]:
    """Edge counts for this rank count: 1, fewer than ranks, primes, not divisible by ranks."""
    return sorted({1, 2, 3, max(1, size - 1), size + 1, 7, 97, 1009})


@pytest.fixture(params=[256, 4096, 1 << 20], ids=["seg256B", "seg4K", "seg1M"])
def segment(request):
    """Small segments exercise the pipelines with many segments; 1 MiB is the default."""
    with mpicoll.config.override(segment_bytes=max(1024, request.param)):
        yield request.param


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_sum_matches_mpi(comm, algorithm, dtype, segment):
    for count in counts_for(comm.size):
        x = rank_input(count, comm.rank, dtype)
        got = mpicoll.allreduce(x, algorithm=algorithm, comm=comm)
        assert_equal_all(comm.mpi, got, mpi_allreduce(comm.mpi, x, "sum"), f"count={count}")
        assert_same_on_all_ranks(comm.mpi, got)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", ["float32", "int64", "float16"])
def test_every_op(comm, algorithm, op, dtype):
    if op == "avg" and dtype == "int64":
        pytest.skip("avg needs a floating dtype (covered by test_avg_rejects_integers)")
    kind = "prod" if op == "prod" else "int"
    with mpicoll.config.override(segment_bytes=1024):
        for count in (1, 300, 1001):
            x = rank_input(count, comm.rank, dtype, kind)
            got = mpicoll.allreduce(x, op, algorithm=algorithm, comm=comm)
            assert_equal_all(comm.mpi, got, mpi_allreduce(comm.mpi, x, op), f"op={op} count={count}")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_random_floats_match_float64_reference(comm, algorithm, dtype):
    count = 5003
    x = rank_input(count, comm.rank, dtype, "float", seed=1)
    want = reference(all_inputs(count, comm.size, dtype, "float", seed=1), "sum")
    with mpicoll.config.override(segment_bytes=2048):
        got = mpicoll.allreduce(x, algorithm=algorithm, comm=comm)
        again = mpicoll.allreduce(x, algorithm=algorithm, comm=comm)
    tol = {"float16": 2e-2, "float32": 1e-5, "float64": 1e-12}[dtype] * comm.size
    assert_close_all(comm.mpi, got, want, rtol=tol, atol=tol)
    assert_same_on_all_ranks(comm.mpi, got)
    assert_equal_all(comm.mpi, again, got, "repeated call")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float16_accumulates_in_float32(comm, algorithm):
    # 2049 is not representable in float16: adding 1 to 2048 per rank in float16 would stall at 2048.
    x = np.full(33, 2048 if comm.rank == 0 else 1, dtype=np.float16)
    got = mpicoll.allreduce(x, algorithm=algorithm, comm=comm)
    want = np.full(33, np.float32(2048 + comm.size - 1), dtype=np.float32).astype(np.float16)
    assert_equal_all(comm.mpi, got, want)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_buffers_shapes_and_in_place(comm, algorithm):
    base = rank_input(6 * 35, comm.rank, "float64").reshape(6, 35)
    want = mpi_allreduce(comm.mpi, base, "sum")
    with mpicoll.config.override(segment_bytes=1024):
        x = base.copy()
        got = mpicoll.allreduce(x, algorithm=algorithm, comm=comm)
        assert_equal_all(comm.mpi, x, base, "input after the call")  # input untouched
        assert_equal_all(comm.mpi, got, want, "2-D result")

        out = np.empty_like(x)
        result = mpicoll.allreduce(x, algorithm=algorithm, comm=comm, out=out)
        assert_equal_all(comm.mpi, np.array(result is out), np.array(True), "returns out")
        assert_equal_all(comm.mpi, out, want, "out=")

        mpicoll.allreduce(x, algorithm=algorithm, comm=comm, out=x)
        assert_equal_all(comm.mpi, x, want, "out=x (in place)")

        strided = base.T  # non-contiguous input and output
        out_t = np.empty((6, 70))[:, ::2].T
        mpicoll.allreduce(strided, algorithm=algorithm, comm=comm, out=out_t)
        assert_equal_all(comm.mpi, out_t, want.T, "non-contiguous")

        in_place_f16 = base.astype(np.float16)
        mpicoll.allreduce(in_place_f16, algorithm=algorithm, comm=comm, out=in_place_f16)
        assert_equal_all(comm.mpi, in_place_f16, want.astype(np.float16), "float16 in place")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_empty(comm, algorithm):
    x = np.empty((0, 3), dtype=np.float32)
    got = mpicoll.allreduce(x, algorithm=algorithm, comm=comm)
    assert_equal_all(comm.mpi, got, x)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_pipeline_depths(comm, depth):
    x = rank_input(20011, comm.rank, "int64")
    want = mpi_allreduce(comm.mpi, x, "sum")
    with mpicoll.config.override(segment_bytes=1024, pipeline_depth=depth):
        for algorithm in ("ring", "tree", "recursive_doubling", "rabenseifner"):
            assert_equal_all(comm.mpi, mpicoll.allreduce(x, algorithm=algorithm, comm=comm), want, algorithm)


def test_default_comm_and_module_api(comm):
    x = np.full(10, mpicoll.rank(), dtype=np.int32)
    got = mpicoll.allreduce(x)  # default communicator, auto algorithm
    want = np.full(10, sum(range(mpicoll.size())), dtype=np.int32)
    assert_equal_all(comm.mpi, got, want)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("op", ["band", "bor", "bxor"])
@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_bitwise_ops_match_mpi(comm, algorithm, op, dtype):
    from mpi4py import MPI

    rng = np.random.default_rng(comm.rank)
    with mpicoll.config.override(segment_bytes=1024):
        for count in (1, 300, 1001):
            x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=count, dtype=dtype)
            want = np.empty_like(x)
            comm.mpi.Allreduce(x, want, {"band": MPI.BAND, "bor": MPI.BOR, "bxor": MPI.BXOR}[op])
            got = mpicoll.allreduce(x, op, algorithm=algorithm, comm=comm)
            assert_equal_all(comm.mpi, got, want, f"op={op} count={count}")
    with pytest.raises(mpicoll.DtypeError, match="integer bits"):
        mpicoll.allreduce(np.zeros(3, np.float32), op, algorithm=algorithm, comm=comm)


def rabenseifner_order(inputs: list[np.ndarray], work: np.dtype) -> np.ndarray:
    """Rabenseifner's sum replayed in NumPy, in ``work`` precision: each extra rank ``r < 2 rem``
    (even) folds into ``r + 1``, lower rank first; then, from the highest bit of the group index
    down to the lowest, partners add lower index first (the recursive halving). The allgather and
    the fold-out only copy, so this is every element's order whatever the segment size."""
    p = len(inputs)
    pof2 = 1 << (p.bit_length() - 1)
    rem = p - pof2
    group = [inputs[2 * i].astype(work) + inputs[2 * i + 1].astype(work) if i < rem else inputs[i + rem].astype(work)
             for i in range(pof2)]
    mask = pof2 >> 1
    while mask:
        group = [group[i & ~mask] + group[i | mask] for i in range(pof2)]
        mask >>= 1
    return group[0]


class MessageSizes:
    """Delegates to an mpi4py communicator and records the byte size of every message sent."""

    def __init__(self, mpi):
        self._mpi, self.sizes = mpi, []

    def __getattr__(self, name):
        target = getattr(self._mpi, name)
        if name not in ("Isend", "Send", "Sendrecv"):
            return target

        def recorded(buf, *args, **kwargs):
            self.sizes.append(np.asarray(buf[0]).nbytes)
            return target(buf, *args, **kwargs)

        return recorded


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("segment_bytes", [1024, 4096, 1 << 20])
def test_rabenseifner_segments_keep_its_reduction_order(comm, dtype, segment_bytes):
    """Segmenting the phases changes how bytes move, never the order of a reduction: the result is
    bitwise the replayed order (and so the same as before segmenting, and on every rank), close to
    the float64 sum and to MPI_Allreduce; integer sums equal MPI's exactly. The counts are not
    multiples of a segment, span one to many segments per block, and include fewer elements than
    blocks."""
    work = np.dtype(np.float32) if dtype == "float16" else np.dtype(dtype)
    seg = segment_bytes // work.itemsize
    counts = sorted({1, comm.size + 1, seg + 1, 2 * seg * (1 << (comm.size.bit_length() - 1)) + 7,
                     min(5 * seg + 3, 1 << 19)})
    tol = {"float16": 2e-2, "float32": 1e-5, "float64": 1e-12}[dtype] * comm.size
    with mpicoll.config.override(segment_bytes=segment_bytes):
        for count in counts:
            inputs = all_inputs(count, comm.size, dtype, "float", seed=17)
            got = mpicoll.allreduce(inputs[comm.rank], algorithm="rabenseifner", comm=comm)
            want = rabenseifner_order(inputs, work).astype(dtype)
            assert_equal_all(comm.mpi, got, want, f"count={count}: the replayed order")
            assert_close_all(comm.mpi, got, reference(inputs, "sum"), rtol=tol, atol=tol, what=f"count={count}")
            assert_close_all(comm.mpi, got, mpi_allreduce(comm.mpi, inputs[comm.rank], "sum").astype(np.float64),
                             rtol=tol, atol=tol, what=f"count={count} against MPI_Allreduce")
            exact = rank_input(count, comm.rank, "int64")
            assert_equal_all(comm.mpi, mpicoll.allreduce(exact, algorithm="rabenseifner", comm=comm),
                             mpi_allreduce(comm.mpi, exact, "sum"), f"count={count} int64")


@pytest.mark.parametrize("algorithm", ["rabenseifner", "recursive_doubling"])
def test_no_message_is_longer_than_a_segment(comm, algorithm):
    """Rabenseifner's phases and the fold of extra ranks send pipeline segments, never a whole half
    (over TCP one 8 MiB message ran 2x slower than the ring's 1 MiB segments: bench/RESULTS.md,
    issue 17)."""
    x = rank_input(10_007, comm.rank, "float64")
    want = mpi_allreduce(comm.mpi, x, "sum")
    real = comm.mpi
    comm.mpi = spy = MessageSizes(real)
    try:
        with mpicoll.config.override(segment_bytes=4096, validate=False):
            got = mpicoll.allreduce(x, algorithm=algorithm, comm=comm)
    finally:
        comm.mpi = real
    assert_equal_all(comm.mpi, got, want)
    assert_all(comm.mpi, max(spy.sizes, default=0) <= 4096, f"{algorithm} sent messages of {sorted(set(spy.sizes))}")
