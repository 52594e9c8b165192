"""Every CPU kernel provider against the NumPy reference: bitwise identical results.

(GPU providers: tests/cudasim for Numba-CUDA under the simulator, tests/gpu for CuPy.)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpicoll.kernels import reference as ref

from mpicoll import kernels

numba_cpu = pytest.importorskip("mpicoll.kernels.numba_cpu", reason="numba is not installed")
PROVIDERS = {"numba-cpu": numba_cpu.OPS}
FLOATS = [np.float16, np.float32, np.float64]


def data(n: int, dtype, seed: int = 0, specials: bool = True) -> np.ndarray:
    """Random values with ties, and (optionally) NaN, +-inf and +-0.0 sprinkled in."""
    rng = np.random.default_rng([seed, n])
    x = (rng.standard_normal(n) * 10).astype(dtype)
    if n > 20:
        x[5::17] = x[3]  # ties in magnitude
        x[6::19] = -x[3]
    if specials and n > 10:
        x[:6] = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-8], dtype=dtype)
    return x


def same(a, b) -> bool:
    """Bitwise equality of arrays (NaN payloads included), or of tuples of arrays."""
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(p, q) for p, q in zip(a, b, strict=True))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.fixture(params=list(PROVIDERS))
def ops(request):
    return PROVIDERS[request.param]


def test_every_reference_op_is_implemented(ops):
    assert set(ops) == set(ref.OPS)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [0, 1, 7, 1000, 100003])
def test_selection(ops, dtype, n):
    x = data(n, dtype)
    for k in sorted({0, min(1, n), n // 3, n}):
        assert same(ops["topk"](x, k), ref.topk(x, k)), k
    for tau in (0.0, 0.5, 12.0, float("inf")):
        assert same(ops["threshold"](x, tau), ref.threshold(x, tau)), tau
    assert same(ops["nonzero"](x), ref.nonzero(x))


def test_topk_ties_go_to_the_lower_index(ops):
    x = np.array([1.0, -3.0, 3.0, 2.0, -3.0, 3.0], dtype=np.float32)
    assert ops["topk"](x, 3).tolist() == [1, 2, 4]
    assert ref.topk(x, 3).tolist() == [1, 2, 4]


@pytest.mark.parametrize("bits,qmax", [(8, 127), (4, 7), (4, 3)])
@pytest.mark.parametrize("kind", ["max", "l2"])
@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("n,block", [(0, 4), (1, 4), (1001, 64), (100003, 257), (5000, 5000), (300001, 150001),
                                     (262147, 262146)])
def test_quantize(ops, bits, qmax, kind, stochastic, n, block):
    x = data(n, np.float32, specials=False)
    got = ops["quantize"](x, bits, block, kind, qmax, stochastic, 2**64 - 7)
    want = ref.quantize(x, bits, block, kind, qmax, stochastic, 2**64 - 7)
    assert same(got, want)
    assert same(ops["dequantize"](*got, n, bits, block), ref.dequantize(*want, n, bits, block))


def test_quantize_specials(ops):
    x = data(1000, np.float32)  # NaN and inf in the first block
    assert same(ops["quantize"](x, 8, 100, "max", 127, False, 1), ref.quantize(x, 8, 100, "max", 127, False, 1))


@pytest.mark.parametrize("n,block", [(0, 8), (1, 8), (13, 8), (100003, 1000), (64, 64), (300001, 300001),
                                     (200003, 70000)])
def test_sign(ops, n, block):
    x = data(n, np.float32)
    got, want = ops["sign_pack"](x, block), ref.sign_pack(x, block)
    assert same(got, want)
    assert same(ops["sign_unpack"](*got, n, block), ref.sign_unpack(*want, n, block))


@given(st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=300))
@settings(max_examples=60, deadline=None)
def test_half_precision_on_arbitrary_bits(bits):
    x = np.array(bits, dtype=np.uint32).view(np.float32)
    for ops in PROVIDERS.values():
        assert same(ops["fp16_encode"](x), ref.fp16_encode(x))
        assert same(ops["bf16_encode"](x), ref.bf16_encode(x))


def test_half_precision_boundaries_and_decoding(ops):
    # around every half exponent boundary, overflow, subnormals and the smallest values
    edges = np.array([65504, 65519.99, 65520, 65536, 6.1035e-05, 6.0976e-05, 5.96e-08, 2.98e-08, 2.99e-08,
                      1.0 + 2**-11, 1.0 + 3 * 2**-11, 3.4e38, 1e-45], dtype=np.float32)
    x = np.concatenate([edges, -edges, np.nextafter(edges, np.float32(np.inf)), np.nextafter(edges, np.float32(0))])
    assert same(ops["fp16_encode"](x), ref.fp16_encode(x))
    assert same(ops["bf16_encode"](x), ref.bf16_encode(x))
    every_half = np.arange(65536, dtype=np.uint16)
    assert same(ops["fp16_decode"](every_half), ref.fp16_decode(every_half))
    assert same(ops["bf16_decode"](every_half), ref.bf16_decode(every_half))


def test_random_numbers(ops):
    for base in (0, 1, 2**63, 2**64 - 1):
        assert same(ops["uniform"](base, 1000), ref.uniform(base, 1000))
        for n, k in ((0, 0), (1, 1), (10, 10), (1000, 7), (100003, 1000)):
            assert same(ops["stratified_indices"](base, n, k), ref.stratified_indices(base, n, k))
    idx = ref.stratified_indices(5, 1000, 7)
    assert np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < 1000
    u = ref.uniform(9, 100000)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


@pytest.mark.parametrize("dtype", FLOATS)
def test_scatter_add_and_csr(ops, dtype):
    dense_a = data(500, dtype, specials=False)
    dense_b = dense_a.copy()
    idx = np.array([0, 3, 77, 499], dtype=np.int64)
    vals = np.array([1.5, -2.0, 3.25, 4.0], dtype=dtype)
    ops["scatter_add"](dense_a, idx, vals)
    ref.scatter_add(dense_b, idx, vals)
    assert same(dense_a, dense_b)
    mat = data(60 * 45, dtype).reshape(60, 45)
    mat[::3] = 0
    mat[:, ::2] = 0
    got, want = ops["csr_build"](mat), ref.csr_build(mat)
    assert same(got, want)
    assert same(ops["csr_densify"](*got, mat.shape, mat.dtype), ref.csr_densify(*want, mat.shape, mat.dtype))
    empty = np.zeros((3, 0), dtype=dtype)
    assert same(ops["csr_build"](empty), ref.csr_build(empty))


@pytest.mark.parametrize("n,m,r,size", [(1, 1, 1, 1), (7, 5, 3, 33), (300, 257, 4, 300 * 257 - 100),
                                         (64, 64, 0, 4096), (100, 80, 1, 8000), (40, 3000, 8, 120000), (5, 5, 2, 0)])
def test_lowrank_reconstruct(ops, n, m, r, size):
    rng = np.random.default_rng([n, m, r])
    p = (rng.standard_normal((n, r)) * 10.0 ** rng.integers(-3, 4, (n, r))).astype(np.float32)
    q = (rng.standard_normal((m, r)) * 10.0 ** rng.integers(-3, 4, (m, r))).astype(np.float32)
    want = ref.lowrank_reconstruct(p, q, size)
    assert same(ops["lowrank_reconstruct"](p, q, size), want)
    out = np.full(size, np.nan, np.float32)
    assert ops["lowrank_reconstruct"](p, q, size, out=out) is out and same(out, want)
    exact = (p.astype(np.float64) @ q.T.astype(np.float64)).reshape(-1)[:size]
    scale = (np.abs(p).astype(np.float64) @ np.abs(q).T).reshape(-1)[:size]
    assert np.all(np.abs(want - exact) <= 1e-6 * r * scale)  # a float32 sum of r rounded products
    with pytest.raises(ValueError, match="cannot give"):
        ops["lowrank_reconstruct"](p, q, n * m + 1)


def test_registry_resolves_and_falls_back(monkeypatch):
    from mpicoll.kernels import registry
    from mpicoll.kernels.providers import ProviderStatus

    from mpicoll import config
    from mpicoll.errors import UnsupportedError

    with config.override(kernel_providers="numba-cpu,numpy"):
        assert kernels.get("topk", "cpu") is numba_cpu.OPS["topk"]
    with config.override(kernel_providers="numpy"):
        assert kernels.get("topk", "cpu") is ref.topk
    with config.override(kernel_providers="numba-cpu,bogus"), pytest.raises(UnsupportedError, match="bogus"):
        kernels.get("topk", "cpu")
    registry.reset()
    monkeypatch.setattr(registry, "provider_status",
                        lambda name: [ProviderStatus(name, "cpu", name == "numpy", "not here (test)")])
    with config.override(kernel_providers="numba-cpu,numpy"):
        with pytest.warns(UserWarning, match="'numba-cpu' is unavailable: not here .*using 'numpy' instead"):
            assert kernels.get("topk", "cpu") is ref.topk
        assert kernels.get("quantize", "cpu") is ref.quantize  # warned once only (no warning here)
    registry.reset()
    with config.override(kernel_providers="numpy"), pytest.raises(UnsupportedError, match="no kernel provider"):
        kernels.get("topk", "cuda")


def lane_sensitive_block() -> np.ndarray:
    """16 values whose float64 sum differs between a plain left-to-right scan (2**53) and the
    contract's 8-lane order (2**53 + 14): a provider that ignores the order fails on it."""
    x = np.ones(16, dtype=np.float32)
    x[0] = 2.0**53
    return x


def test_ordered_sum_is_the_lane_order():
    x = lane_sensitive_block()
    sequential = np.cumsum(x.astype(np.float64))[-1]
    assert sequential == 2.0**53
    assert ref.ordered_sum(x.astype(np.float64)[None, :])[0] == 2.0**53 + 14


def test_scales_follow_the_lane_order(ops):
    x = np.tile(lane_sensitive_block(), 3)
    assert same(ops["sign_pack"](x, 16), ref.sign_pack(x, 16))
    assert same(ops["quantize"](x, 8, 16, "l2", 127, False, 0), ref.quantize(x, 8, 16, "l2", 127, False, 0))
