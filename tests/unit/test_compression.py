"""Compressors: round-trip bounds, wire sizes, determinism, malformed payloads, error feedback."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mpicoll
from mpicoll import compression
from mpicoll.compression import ErrorFeedback
from mpicoll.compression.payload import HEADER_BYTES
from mpicoll.errors import ArgumentError, DtypeError, PayloadError, UnsupportedError

ALL = compression.names()


def gaussian(n: int, dtype=np.float32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng([seed, n]).standard_normal(n).astype(dtype)


def align8(n: int) -> int:
    return (n + 7) & ~7


def roundtrip(codec, x, key="t"):
    payload, ctx = codec.compress(x, key)
    return payload, ctx, codec.decompress(payload, ctx)


def test_registry_and_parameter_errors():
    assert sorted(["none", "fp16", "bf16", "topk", "topk_approx", "randomk", "threshold", "int8", "int4",
                          "qsgd", "sign", "csr", "coo", "powersgd"]) == ALL
    with pytest.raises(UnsupportedError, match=r"unknown compressor 'zip'.*'bf16'"):
        compression.get("zip")
    with pytest.raises(UnsupportedError, match="unexpected keyword"):
        compression.get("topk", k=5)
    for name, params, accepted in [("topk", {"ratio": 0}, r"\(0.0, 1.0\]"), ("topk", {"ratio": 1.5}, r"\(0.0, 1.0\]"),
                                   ("qsgd", {"levels": 128}, r"\[1, 127\]"), ("int8", {"block": 0}, r"\[1, "),
                                   ("threshold", {"tau": -1}, r"\[0.0, inf\]"), ("randomk", {"seed": -1}, r"\[0, "),
                                   ("int4", {"stochastic": "yes"}, "True or False")]:
        with pytest.raises(ArgumentError, match=accepted):
            compression.get(name, **params)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_shapes_dtypes_and_empty(name, dtype):
    codec = compression.get(name)
    shapes = [(6, 7), (0, 3), (1, 1)] if name == "csr" else [(1001,), (0,), (1,), (3, 5, 7)]
    for shape in shapes:
        x = gaussian(math.prod(shape), dtype).reshape(shape)
        payload, _, y = roundtrip(codec, x)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert payload.dtype == np.uint8 and payload.ndim == 1 and payload.size >= HEADER_BYTES
        if codec.lossless:
            assert np.array_equal(y, x)


def test_refuses_integers_and_non_arrays():
    with pytest.raises(DtypeError, match="int32"):
        compression.get("topk").compress(np.ones(4, np.int32))
    with pytest.raises(ArgumentError, match="NumPy or CuPy"):
        compression.get("fp16").compress([1.0, 2.0])
    with pytest.raises(ArgumentError, match="2-D"):
        compression.get("csr").compress(np.ones(5, np.float32))


def test_half_precision():
    x = gaussian(10000) * 100
    _, _, y = roundtrip(compression.get("fp16"), x)
    assert np.array_equal(y, x.astype(np.float16).astype(np.float32))
    _, _, y = roundtrip(compression.get("bf16"), x)
    assert np.all(np.abs(y - x) <= np.abs(x) * 2.0**-8)
    assert np.all(np.isinf(roundtrip(compression.get("fp16"), np.array([1e6], np.float32))[2]))


def test_topk_keeps_exactly_the_k_largest():
    x = gaussian(10007)
    x[100:200] = 50.0  # ties among the largest: the lower indices win
    codec = compression.get("topk", ratio=0.005)
    k = math.ceil(0.005 * x.size)
    payload, _, y = roundtrip(codec, x)
    kept = np.flatnonzero(y)
    assert kept.tolist() == list(range(100, 100 + k))
    assert np.array_equal(y[kept], x[kept])
    assert payload.nbytes == HEADER_BYTES + align8(4 * k) + 4 * k  # uint32 indices, float32 values
    order = np.argsort(-np.abs(x), kind="stable")[: 3 * k]
    _, _, y3 = roundtrip(compression.get("topk", ratio=3 * k / x.size), x)
    assert set(np.flatnonzero(y3)) == set(order)


def test_topk_approx_and_threshold():
    x = gaussian(200000)
    codec = compression.get("topk_approx", ratio=0.01, sample=4096)
    _, _, y = roundtrip(codec, x)
    kept = np.flatnonzero(y)
    assert 0.5 * 2000 <= kept.size <= 2 * 2000
    smallest_kept = np.abs(x[kept]).min()
    assert np.all(np.abs(x[np.abs(x) > smallest_kept]) > 0)  # everything larger was kept
    assert np.count_nonzero(np.abs(x) >= smallest_kept) == kept.size
    _, _, y = roundtrip(compression.get("threshold", tau=2.0), x)
    assert np.array_equal(np.flatnonzero(y), np.flatnonzero(np.abs(x) >= 2.0))


def test_randomk_indices_are_shared_across_ranks_and_change_per_step():
    x0, x1 = gaussian(5000, seed=0), gaussian(5000, seed=1)
    rank0, rank1 = compression.get("randomk", ratio=0.02, seed=7), compression.get("randomk", ratio=0.02, seed=7)
    p0, c0, y0 = roundtrip(rank0, x0, key="layer1")
    p1, _, y1 = roundtrip(rank1, x1, key="layer1")
    assert np.array_equal(np.flatnonzero(y0), np.flatnonzero(y1))  # same indices on both "ranks"
    assert p0.nbytes == HEADER_BYTES + 4 * 100  # values only
    summed = rank0.decompress(p0, c0) + rank0.decompress(p1, c0)  # a peer's payload decodes with my ctx
    assert np.allclose(summed[np.flatnonzero(y0)], (x0 + x1)[np.flatnonzero(y0)])
    _, _, y0b = roundtrip(rank0, x0, key="layer1")  # next step: new indices
    assert not np.array_equal(np.flatnonzero(y0), np.flatnonzero(y0b))
    _, _, other_key = roundtrip(compression.get("randomk", ratio=0.02, seed=7), x0, key="layer2")
    assert not np.array_equal(np.flatnonzero(y0), np.flatnonzero(other_key))
    lagging = compression.get("randomk", ratio=0.02, seed=7)  # a rank that is one step behind
    lag_payload, _ = lagging.compress(x0, key="layer1")
    with pytest.raises(PayloadError, match="another random stream"):
        rank0.decompress(lag_payload, c0.__class__(c0.shape, c0.dtype, c0.key, 1, c0.device))


@pytest.mark.parametrize("name,bits,qmax", [("int8", 8, 127), ("int4", 4, 7)])
def test_uniform_quantizers_error_bound_and_wire(name, bits, qmax):
    x = gaussian(100003) * 3
    block = 256
    payload, _, y = roundtrip(compression.get(name, block=block), x)
    padded = np.zeros(-(-x.size // block) * block, np.float32)
    padded[: x.size] = np.abs(x)
    step = np.repeat(padded.reshape(-1, block).max(axis=1) / qmax, block)[: x.size]
    assert np.all(np.abs(y - x) <= step / 2 * (1 + 1e-5))  # nearest rounding: half a step
    nblocks = -(-x.size // block)
    assert payload.nbytes == HEADER_BYTES + align8(4 * nblocks) + -(-x.size * bits // 8)
    _, _, ys = roundtrip(compression.get(name, block=block, stochastic=True, seed=3), x)
    assert np.all(np.abs(ys - x) <= step * (1 + 1e-5))  # stochastic rounding: under one step


@pytest.mark.parametrize("name,params", [("int8", {"stochastic": True, "block": 64}), ("qsgd", {"levels": 4}),
                                         ("qsgd", {"levels": 127})])
def test_stochastic_quantizers_are_unbiased(name, params):
    x = gaussian(4096)
    codec = compression.get(name, **params)
    trials = 400
    mean = np.mean([roundtrip(codec, x, key="w")[2] for _ in range(trials)], axis=0, dtype=np.float64)
    block = codec.block
    rows = x.reshape(-1, block).astype(np.float64)
    norm = np.abs(rows).max(axis=1) / 127 if name == "int8" else np.linalg.norm(rows, axis=1) / codec.levels
    step = np.repeat(norm, block)  # the distance between the two values an element rounds to
    frac = np.abs(x / step) % 1.0  # the chance of rounding away from zero
    sigma = step * np.sqrt(frac * (1 - frac) / trials)  # standard error of an unbiased rounding's mean
    assert np.all(np.abs(mean - x) <= 6 * sigma + 3 * step / trials + 1e-5 * step)
    z = (mean - x) / np.maximum(sigma, step / trials)
    assert abs(z.mean()) < 0.15, z.mean()  # no systematic bias across 4096 elements


def test_qsgd_error_bound_and_sign():
    x = gaussian(10000)
    _, _, y = roundtrip(compression.get("qsgd", levels=8, block=1000), x)
    norms = np.repeat(np.linalg.norm(x.reshape(-1, 1000), axis=1), 1000)
    assert np.all(np.abs(y - x) <= norms / 8 * (1 + 1e-5))
    payload, _, y = roundtrip(compression.get("sign"), x)
    assert np.all(np.sign(y) == np.where(x < 0, -1, 1))
    assert np.allclose(np.abs(y), np.abs(x).mean())
    assert payload.nbytes == HEADER_BYTES + 8 + 10000 // 8  # one scale (padded) + 1 bit per element
    _, _, yb = roundtrip(compression.get("sign", block=100), x)
    assert np.allclose(np.abs(yb), np.repeat(np.abs(x.reshape(-1, 100)).mean(axis=1), 100))


def test_sparse_formats_are_lossless_and_small():
    emb = np.zeros((1000, 64), np.float32)
    emb[[3, 500, 999]] = gaussian(3 * 64).reshape(3, 64)
    payload, _, y = roundtrip(compression.get("csr"), emb)
    assert np.array_equal(y, emb) and payload.nbytes < emb.nbytes / 15
    vec = np.zeros(100000, np.float32)
    vec[::1000] = 1.5
    payload, _, y = roundtrip(compression.get("coo"), vec)
    assert np.array_equal(y, vec) and payload.nbytes == HEADER_BYTES + align8(4 * 100) + 4 * 100


@pytest.mark.parametrize("name", ALL)
def test_malformed_payloads_raise(name):
    codec = compression.get(name)
    x = gaussian(600).reshape(20, 30) if name == "csr" else gaussian(600)
    payload, ctx = codec.compress(x, key="k")
    for bad, message in [(payload[: payload.size - 1], "truncated|body|implies|shorter"),
                         (payload[:10], "shorter than"),
                         (np.concatenate([payload, np.zeros(8, np.uint8)]), "body"),
                         (payload.astype(np.int8), "uint8")]:
        with pytest.raises(PayloadError, match=message):
            codec.decompress(bad, ctx)
    forged = payload.copy()
    forged[:4] = np.frombuffer(b"NOPE", np.uint8)
    with pytest.raises(PayloadError, match="magic"):
        codec.decompress(forged, ctx)
    forged = payload.copy()
    forged[4] = 9
    with pytest.raises(PayloadError, match="version"):
        codec.decompress(forged, ctx)
    other = "int8" if name != "int8" else "int4"
    with pytest.raises(PayloadError, match="written by codec"):
        compression.get(other).decompress(payload, ctx)
    _, other_ctx = codec.compress(gaussian(30).reshape(5, 6) if name == "csr" else gaussian(30), key="k2")
    with pytest.raises(PayloadError, match=r"elements|rows"):
        codec.decompress(payload, other_ctx)


@pytest.mark.parametrize("name", ["topk", "threshold", "coo", "topk_approx"])
def test_corrupted_indices_raise(name):
    codec = compression.get(name)
    x = gaussian(1000)
    payload, ctx = codec.compress(x)
    forged = payload.copy()
    forged[HEADER_BYTES: HEADER_BYTES + 4] = np.frombuffer(np.uint32(5000).tobytes(), np.uint8)
    with pytest.raises(PayloadError, match="indices"):
        codec.decompress(forged, ctx)


@pytest.mark.parametrize("name", ["topk", "sign", "int4", "randomk", "qsgd", "topk_approx", "fp16", "bf16", "powersgd"])
def test_error_feedback_conserves_the_sum(name):
    ef = ErrorFeedback(compression.get(name))
    assert ef.name == name and ef.kind == compression.get(name).kind
    rng = np.random.default_rng(0)
    total_in = np.zeros(3000, np.float64)
    total_out = np.zeros(3000, np.float64)
    for _ in range(50):
        g = rng.standard_normal(3000).astype(np.float32)
        payload, ctx = ef.compress(g, key="w")
        total_in += g
        total_out += ef.decompress(payload, ctx)
    conserved = total_out + ef.residual("w")
    assert np.allclose(conserved, total_in, atol=1e-3), np.abs(conserved - total_in).max()


def test_error_feedback_state_round_trip():
    x = [gaussian(500, seed=s) for s in range(4)]
    a = ErrorFeedback(compression.get("randomk", ratio=0.1, seed=1))
    for g in x[:2]:
        a.compress(g, key="w")
    state = a.state_dict()
    b = ErrorFeedback(compression.get("randomk", ratio=0.1, seed=1))
    b.load_state_dict(state)
    assert np.array_equal(b.residual("w"), a.residual("w"))
    pa, _ = a.compress(x[2], key="w")
    pb, _ = b.compress(x[2], key="w")
    assert np.array_equal(pa, pb)  # same residual and same random step after the restore
    with pytest.raises(ArgumentError, match="shape"):
        a.compress(gaussian(10), key="w")
    with pytest.raises(ArgumentError, match="plain compressor"):
        ErrorFeedback(a)


@pytest.mark.parametrize("name", [n for n in ALL if n != "csr"])
def test_providers_give_identical_payloads(name):
    pytest.importorskip("numba")
    x = gaussian(30011) * 5
    payloads = []
    for providers in ("numpy", "numba-cpu,numpy"):
        with mpicoll.config.override(kernel_providers=providers):
            payloads.append(compression.get(name).compress(x, key="same")[0])
    assert np.array_equal(payloads[0], payloads[1])


@pytest.mark.parametrize("name", ["none", "fp16", "bf16", "randomk", "int8", "int4", "qsgd", "sign", "powersgd"])
def test_fixed_size_payloads_reuse_buffers(name):
    x = gaussian(10001)
    a, b = compression.get(name), compression.get(name)
    size = a.payload_nbytes(x)
    buffer = np.full(size, 0xAB, dtype=np.uint8)  # garbage, padding included: must be overwritten
    payload, ctx = a.compress(x, key="w", out=buffer)
    assert payload is buffer
    fresh, _ = b.compress(x, key="w")
    assert np.array_equal(payload, fresh)  # same bytes as a freshly allocated payload
    out = np.full_like(x, np.nan)
    assert a.decompress(payload, ctx, out=out) is out
    assert np.array_equal(out, a.decompress(payload, ctx))
    with pytest.raises(ArgumentError, match=f"{size} bytes"):
        a.compress(x, key="w", out=np.empty(size + 1, np.uint8))
    with pytest.raises(ArgumentError, match="out must be"):
        a.decompress(payload, ctx, out=np.empty(5, np.float32))
    assert compression.get("topk").payload_nbytes(x) is None  # data-dependent sizes say so
