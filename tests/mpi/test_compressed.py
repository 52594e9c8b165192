"""compressed_allreduce under mpiexec: exactness where promised, conservation, agreement, errors."""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import assert_all, assert_close_all, assert_equal_all, assert_same_on_all_ranks, mpi_allreduce, rank_input

import mpicoll
from mpicoll import compression
from mpicoll.compression import ErrorFeedback
from mpicoll.errors import ArgumentError, MismatchError, PayloadError, PeerError, UnsupportedError

PATHS = {
    "none": ["ring", "tree", "recursive_doubling", "rabenseifner", "two_phase", "auto"],
    "fp16": ["ring", "recursive_doubling", "two_phase", "auto"],
    "bf16": ["ring", "auto"],
    "randomk": ["ring", "tree", "auto"],
    "topk": ["sparse_allgather", "sparse_rd", "two_phase", "auto"],
    "threshold": ["sparse_allgather", "sparse_rd", "auto"],
    "coo": ["sparse_allgather", "sparse_rd"],
    "int8": ["two_phase", "auto"],
    "int4": ["two_phase"],
    "qsgd": ["two_phase"],
    "sign": ["two_phase", "auto"],
    "powersgd": ["powersgd", "two_phase", "auto"],
}
CASES = [(name, algo) for name, algos in PATHS.items() for algo in algos]


@pytest.fixture(autouse=True)
def small_segments():
    with mpicoll.config.override(segment_bytes=4096):
        yield


@pytest.mark.parametrize("name,algorithm", CASES)
def test_every_path_agrees_across_ranks(comm, name, algorithm):
    x = rank_input(5003, comm.rank, "float32", "float", seed=2)
    y = mpicoll.compressed_allreduce(x, compression.get(name), key="w", comm=comm, algorithm=algorithm)
    assert_all(comm.mpi, y.shape == x.shape and y.dtype == x.dtype, f"{y.shape} {y.dtype}")
    assert_same_on_all_ranks(comm.mpi, y, f"{name}/{algorithm}")


@pytest.mark.parametrize("algorithm", PATHS["none"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_none_equals_allreduce(comm, algorithm, dtype):
    x = rank_input(3001, comm.rank, dtype, "float", seed=3)
    summed = mpicoll.compressed_allreduce(x, compression.get("none"), comm=comm, average=False, algorithm=algorithm)
    if algorithm != "two_phase":  # the same algorithm on the raw array: the same bits
        assert_equal_all(comm.mpi, summed, mpicoll.allreduce(x, comm=comm, algorithm=algorithm), "sum")
    mean = mpicoll.compressed_allreduce(x, compression.get("none"), comm=comm, algorithm=algorithm)
    assert_close_all(comm.mpi, mean, mpi_allreduce(comm.mpi, x, "sum") / comm.size, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["sparse_allgather", "sparse_rd", "two_phase"])
def test_topk_with_ratio_one_is_the_dense_sum(comm, algorithm):
    x = rank_input(2000, comm.rank, "float32", "int")  # integers: every order of addition is exact
    got = mpicoll.compressed_allreduce(x, compression.get("topk", ratio=1.0), comm=comm, average=False,
                                       algorithm=algorithm)
    assert_equal_all(comm.mpi, got, mpi_allreduce(comm.mpi, x, "sum"))


def test_sparse_rd_switches_to_dense_and_stays_exact(comm):
    rng = np.random.default_rng(comm.rank)
    x = np.zeros(4000, np.float32)
    x[rng.choice(4000, 600, replace=False)] = rng.integers(1, 9, 600)  # 15% dense per rank: merges pass 25%
    got = mpicoll.compressed_allreduce(x, compression.get("coo"), comm=comm, average=False, algorithm="sparse_rd")
    assert_equal_all(comm.mpi, got, mpi_allreduce(comm.mpi, x, "sum"))


@pytest.mark.parametrize("name,algorithm,atol", [
    ("topk", "sparse_allgather", 1e-3), ("topk", "sparse_rd", 1e-3), ("sign", "two_phase", 1e-3),
    ("randomk", "ring", 1e-3), ("int4", "two_phase", 1e-3), ("powersgd", "powersgd", 1e-3),
    # fp16 partial sums are rounded to fp16 on the wire: error feedback keeps what each rank's own
    # compression drops, not the rounding of the sums in transit (about 2**-11 of |sum| per step)
    ("fp16", "ring", 0.1)])
def test_error_feedback_conserves_the_sum_across_ranks(comm, name, algorithm, atol):
    ef = ErrorFeedback(compression.get(name))
    n, steps = 1000, 20
    out_total = np.zeros(n)
    in_total = np.zeros(n)
    for step in range(steps):
        x = rank_input(n, comm.rank, "float32", "float", seed=100 + step)
        out_total += mpicoll.compressed_allreduce(x, ef, key="w", comm=comm, average=False, algorithm=algorithm)
        in_total += mpi_allreduce(comm.mpi, x.astype(np.float64), "sum")
    residual = np.zeros(n)  # every residual this rank holds, placed where it belongs
    for key, value in ef.residuals.items():
        if key == "w":
            residual += value
        elif key[1] == "chunk":  # two-phase: worker residual of chunk j, and the owner's residual
            residual[_chunk(n, comm.size, key[2])] += value
        else:
            residual[_chunk(n, comm.size, comm.rank)] += value
    conserved = out_total + mpi_allreduce(comm.mpi, residual, "sum")
    assert_close_all(comm.mpi, conserved, in_total, rtol=1e-4, atol=atol)


def test_powersgd_equals_compressing_the_exact_sum(comm):
    """PowerSGD is linear in the matrix: all-reducing P, then Q, gives what one rank compressing the
    exact sum would give, step after step of warm start."""
    shared = compression.get("powersgd", rank=2, seed=7)
    alone = compression.get("powersgd", rank=2, seed=7)
    for step in range(4):
        x = rank_input(60 * 45, comm.rank, "float32", "float", seed=300 + step).reshape(60, 45)
        got = mpicoll.compressed_allreduce(x, shared, key="w", comm=comm, average=False)
        payload, ctx = alone.compress(mpi_allreduce(comm.mpi, x.astype(np.float64), "sum").astype(np.float32),
                                      key="w")
        assert_close_all(comm.mpi, got, alone.decompress(payload, ctx), rtol=1e-3, atol=1e-3, what=f"step {step}")
        assert_same_on_all_ranks(comm.mpi, got, f"step {step}")


def test_powersgd_of_a_low_rank_sum_is_exact(comm):
    rng = np.random.default_rng(11)
    left = rng.standard_normal((80, 3))  # every rank's matrix shares the column space: the sum has rank 3
    x = (left @ np.random.default_rng([12, comm.rank]).standard_normal((3, 50))).astype(np.float32)
    got = mpicoll.compressed_allreduce(x, compression.get("powersgd", rank=3), comm=comm, average=False)
    assert_close_all(comm.mpi, got, mpi_allreduce(comm.mpi, x.astype(np.float64), "sum"), rtol=1e-4, atol=1e-3)


def test_powersgd_compresses_each_packed_tensor_on_its_own(comm):
    """A bucket packing a weight matrix, a bias and a 3-D kernel (``parts``): the matrices are each
    compressed as if all-reduced alone, the bias (low rank would not shrink it) arrives exact."""
    weight = rank_input(60 * 45, comm.rank, "float32", "float", seed=400).reshape(60, 45)
    bias = rank_input(45, comm.rank, "float32", "int", seed=401)  # integers: any order of addition is exact
    kernel = rank_input(12 * 3 * 5, comm.rank, "float32", "float", seed=402).reshape(12, 3, 5)
    packed = np.concatenate([weight.ravel(), bias, kernel.ravel()])
    ef = ErrorFeedback(compression.get("powersgd", rank=2))
    got = mpicoll.compressed_allreduce(packed, ef, key="b", comm=comm, average=False,
                                       parts=[weight.shape, bias.shape, kernel.shape])
    assert_equal_all(comm.mpi, got[2700:2745], mpi_allreduce(comm.mpi, bias, "sum"), "the bias, exact")
    for part, (start, tensor) in enumerate([(0, weight), (2745, kernel)]):
        alone = compression.get("powersgd", rank=2)
        exact = mpi_allreduce(comm.mpi, tensor.astype(np.float64), "sum").astype(np.float32)
        payload, ctx = alone.compress(exact, key=("b", "part", 2 * part))
        assert_close_all(comm.mpi, got[start: start + tensor.size], alone.decompress(payload, ctx).ravel(),
                         rtol=1e-3, atol=1e-3, what=f"part {2 * part}")
    conserved = got + mpi_allreduce(comm.mpi, ef.residual("b").astype(np.float64), "sum")
    assert_close_all(comm.mpi, conserved, mpi_allreduce(comm.mpi, packed.astype(np.float64), "sum"),
                     rtol=1e-4, atol=1e-3, what="result + residuals = exact sum")
    with pytest.raises(ArgumentError, match="parts"):
        mpicoll.compressed_allreduce(packed, ef, key="c", comm=comm, parts=[weight.shape])


def test_powersgd_parts_are_checked_and_a_refused_call_keeps_the_residual(comm):
    x = rank_input(400, comm.rank, "float32", "float", seed=600)
    ef = ErrorFeedback(compression.get("powersgd", rank=2))
    mpicoll.compressed_allreduce(x, ef, key="r", comm=comm, parts=[(20, 20)])
    before = ef.residual("r").copy()
    for bad in ([(20, -20)], [(20.5, 20)], [(10, 10)], ["ab"]):
        with pytest.raises(ArgumentError, match="parts"):
            mpicoll.compressed_allreduce(x, ef, key="r", comm=comm, parts=bad)
    if comm.size > 1:  # the other ranks' arguments are fine: they are refused by the agreement
        with pytest.raises((MismatchError, PeerError)):
            mpicoll.compressed_allreduce(x, ef, key="r", comm=comm, parts=[(20, 20)] if comm.rank else [(400,)])
    assert_equal_all(comm.mpi, ef.residual("r"), before, "the residual after refused calls")
    one = mpicoll.compressed_allreduce(x, ErrorFeedback(compression.get("powersgd", rank=2)), key="s", comm=comm,
                                       parts=[(400,)])
    none = mpicoll.compressed_allreduce(x, ErrorFeedback(compression.get("powersgd", rank=2)), key="s", comm=comm)
    assert_equal_all(comm.mpi, one, none, "a single 1-D part is compressed like the array alone")


def test_gradient_buckets_give_powersgd_the_tensor_shapes(comm):
    arrays = {"w": rank_input(40 * 30, comm.rank, "float32", "float", seed=500).reshape(40, 30),
              "b": rank_input(30, comm.rank, "float32", "int", seed=501)}
    want = mpi_allreduce(comm.mpi, arrays["b"], "sum")
    buckets = mpicoll.GradientBuckets(arrays, compressor=compression.get("powersgd", rank=2), comm=comm,
                                      average=False)
    buckets.allreduce_all()
    assert_equal_all(comm.mpi, arrays["b"], want, "the bias travels exactly")


def _chunk(n: int, p: int, j: int) -> slice:
    from mpicoll.collectives.partition import displacements, even_counts

    counts = even_counts(n, p)
    start = displacements(counts)[j]
    return slice(start, start + counts[j])


def test_impossible_combinations_and_mismatches(comm):
    x = np.ones(100, np.float32)
    with pytest.raises(UnsupportedError, match="cannot carry sparse payloads"):
        mpicoll.compressed_allreduce(x, compression.get("topk"), comm=comm, algorithm="ring")
    with pytest.raises(UnsupportedError, match="cannot carry quantized"):
        mpicoll.compressed_allreduce(x, compression.get("sign"), comm=comm, algorithm="sparse_rd")
    with pytest.raises(UnsupportedError, match="unknown algorithm"):
        mpicoll.compressed_allreduce(x, compression.get("sign"), comm=comm, algorithm="native")
    if comm.size > 1:
        codec = compression.get("int8" if comm.rank else "int4")
        with pytest.raises(MismatchError, match="compressor"):
            mpicoll.compressed_allreduce(x, codec, comm=comm)
        with pytest.raises(MismatchError, match="different parts"):
            mpicoll.compressed_allreduce(x, compression.get("powersgd"), comm=comm,
                                         parts=[(10, 10)] if comm.rank else [(100,)])


@pytest.mark.skipif(mpicoll.size() < 2, reason="needs a second rank to send a bad payload")
@pytest.mark.parametrize("name,algorithm", [("topk", "sparse_allgather"), ("int8", "two_phase")])
def test_a_bad_payload_from_one_rank_fails_every_rank(comm, name, algorithm, monkeypatch):
    codec = compression.get(name)
    if comm.rank == 1:  # rank 1's compressor writes payloads of another format version
        real = codec.compress

        def corrupt(x, key=None, *, out=None):
            payload, ctx = real(x, key, out=out)
            payload = payload.copy()
            payload[4] = 99
            return payload, ctx

        monkeypatch.setattr(codec, "compress", corrupt)
    x = rank_input(900, comm.rank, "float32", "float")
    expected = (PayloadError, PeerError)
    try:
        mpicoll.compressed_allreduce(x, codec, comm=comm, algorithm=algorithm)
    except expected as exc:
        assert_all(comm.mpi, ("version" in str(exc) and "rank 1" in str(exc)) or comm.rank == 1, str(exc))
    else:
        assert_all(comm.mpi, False, "no error raised")
