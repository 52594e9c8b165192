"""The single-pass ``allgather_decode`` path, ``auto``'s choice of it, and the dense warm-up of GradientBuckets."""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import assert_all, assert_close_all, assert_equal_all, assert_same_on_all_ranks, mpi_allreduce, rank_input

import mpicoll
from mpicoll import compression
from mpicoll.aggregation import GradientBuckets
from mpicoll.aggregation.choice import choose_path
from mpicoll.compression import ErrorFeedback

CODECS = [("sign", {}), ("sign", {"block": 64}), ("int8", {}), ("int4", {}), ("qsgd", {}), ("topk", {"ratio": 0.05}),
          ("fp16", {})]


@pytest.mark.parametrize("name,params", CODECS)
def test_equals_decode_and_sum_of_the_same_payloads(comm, name, params):
    x = rank_input(3001, comm.rank, "float32", "float", seed=5)
    got = mpicoll.compressed_allreduce(x, compression.get(name, **params), key="w", comm=comm,
                                       algorithm="allgather_decode")
    assert_same_on_all_ranks(comm.mpi, got, f"{name} single pass")
    twin = compression.get(name, **params)  # same codec, same key, same step: the same payload
    payload, ctx = twin.compress(x, key="w")
    total = np.zeros(x.size, dtype=np.float32)
    for theirs in comm.mpi.allgather(np.array(payload)):  # every rank's payload, in rank order
        total += twin.decompress(theirs, ctx).astype(np.float32)
    total /= np.float32(comm.size)
    assert_equal_all(comm.mpi, got, total, f"{name}: decode-and-sum in rank order")


def test_error_feedback_keeps_one_residual_and_conserves_the_sum(comm):
    ef = ErrorFeedback(compression.get("sign"))
    n, out_total, in_total = 1000, np.zeros(1000), np.zeros(1000)
    for step in range(15):
        x = rank_input(n, comm.rank, "float32", "float", seed=200 + step)
        out_total += mpicoll.compressed_allreduce(x, ef, key="w", comm=comm, average=False,
                                                  algorithm="allgather_decode")
        in_total += mpi_allreduce(comm.mpi, x.astype(np.float64), "sum")
    assert_all(comm.mpi, list(ef.residuals) == ["w"], f"residual keys {list(ef.residuals)}: no second compression")
    conserved = out_total + mpi_allreduce(comm.mpi, ef.residuals["w"].astype(np.float64), "sum")
    assert_close_all(comm.mpi, conserved, in_total, rtol=1e-4, atol=1e-3)


def test_auto_takes_the_single_pass_when_its_extra_bytes_cost_less_than_a_round(comm):
    sign = compression.get("sign")
    small, large = np.zeros(4096, np.float32), np.zeros(1 << 24, np.float32)
    assert_all(comm.mpi, choose_path(sign, small, comm) == "allgather_decode", "small payload: single pass")
    want_large = "allgather_decode" if comm.size <= 2 else "two_phase"
    assert_all(comm.mpi, choose_path(sign, large, comm) == want_large, f"16M elements on {comm.size} ranks")


def test_gradient_buckets_dense_warmup_then_clean_residuals(comm):
    arrays = {"a": np.zeros(300, np.float32), "b": np.zeros(50, np.float32)}
    ef = ErrorFeedback(compression.get("sign"))
    buckets = GradientBuckets(arrays, compressor=ef, comm=comm, warmup_steps=2, bucket_bytes=1 << 20,
                              algorithm="allgather_decode")
    for step in range(3):
        inputs = {k: rank_input(v.size, comm.rank, "float32", "int", seed=10 * step + i)
                  for i, (k, v) in enumerate(arrays.items())}
        for k, v in inputs.items():
            arrays[k][...] = v
        buckets.allreduce_all()
        packed = np.concatenate([inputs["b"], inputs["a"]])  # reverse registration order: one bucket
        if step < 2:
            assert_equal_all(comm.mpi, np.concatenate([arrays["b"], arrays["a"]]),
                             mpicoll.allreduce(packed, "avg", comm=comm), f"warm-up step {step}: plain average")
            assert_all(comm.mpi, not ef.residuals, "no residual during the warm-up")
        else:
            fresh = ErrorFeedback(compression.get("sign"))
            want = mpicoll.compressed_allreduce(packed, fresh, key="bucket0", comm=comm, algorithm="allgather_decode")
            assert_equal_all(comm.mpi, np.concatenate([arrays["b"], arrays["a"]]), want,
                             "first compressed step starts with empty residuals")
    assert_all(comm.mpi, buckets.steps == 3, f"steps {buckets.steps}")


def test_warmup_steps_is_validated():
    with pytest.raises(mpicoll.ArgumentError, match="warmup_steps"):
        GradientBuckets({"a": np.zeros(3, np.float32)}, warmup_steps=-1)
