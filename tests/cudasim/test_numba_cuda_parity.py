"""The Numba-CUDA provider against the NumPy reference, under the CUDA simulator: bitwise identical.

Run by tests/test_cudasim.py in a subprocess with ``NUMBA_ENABLE_CUDASIM=1`` (tests/conftest.py
does not collect this folder otherwise). The simulator runs one Python thread per CUDA thread,
so the arrays stay small; the provider caps the grid at two blocks there, so every kernel's
grid-stride loop goes round more than once on the larger inputs.
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest
from mpicoll.kernels import reference as ref

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("needs the CUDA simulator: NUMBA_ENABLE_CUDASIM=1", allow_module_level=True)

numba_cuda = pytest.importorskip("mpicoll.kernels.numba_cuda", reason="numba-cuda is not installed")
OPS = numba_cuda.OPS

pytestmark = [
    # the simulator runs the uint64 hash on NumPy scalars, which warn when they wrap (by design)
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
    # the reference computing on NaN / inf inputs
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
]

FLOATS = [np.float16, np.float32, np.float64]
SIZES = [0, 1, 37, 2501]
BASE = 2**64 - 7
SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-8]


def data(n: int, dtype, seed: int = 0, specials: bool = True) -> np.ndarray:
    """Random values with ties in magnitude and (optionally) +-0.0, +-inf, +-NaN and a tiny value."""
    rng = np.random.default_rng([seed, n])
    x = (rng.standard_normal(n) * 10).astype(dtype)
    if n > 20:
        x[8::17] = x[9]
        x[10::19] = -x[9]
    if specials and n > 10:
        x[: len(SPECIALS)] = np.array(SPECIALS, dtype=dtype)
    return x


def heavy_ties(n: int, dtype) -> np.ndarray:
    """Small integers: long runs of equal magnitudes, many zeros and some -0.0."""
    x = np.random.default_rng([7, n]).integers(-3, 4, n).astype(dtype)
    x[::11] = -0.0
    return x


def same(got, want) -> bool:
    """Bitwise equality (NaN payloads included) of NumPy arrays, or of tuples of them."""
    if isinstance(want, tuple):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want, strict=True))
    return (type(got) is np.ndarray and got.dtype == want.dtype and got.shape == want.shape
            and got.tobytes() == want.tobytes())


def test_every_operation_with_the_reference_signature():
    assert set(OPS) == set(ref.OPS)
    for name, fn in OPS.items():
        assert list(inspect.signature(fn).parameters) == list(inspect.signature(ref.OPS[name]).parameters), name


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", SIZES)
def test_selection(dtype, n):
    for x in (data(n, dtype), heavy_ties(n, dtype)):
        for k in sorted({0, min(1, n), n // 3, n}):
            assert same(OPS["topk"](x, k), ref.topk(x, k)), k
        for tau in (0.0, 0.5, 2.0, 12.0, float("inf"), float("nan")):
            assert same(OPS["threshold"](x, tau), ref.threshold(x, tau)), tau
        assert same(OPS["nonzero"](x), ref.nonzero(x))


@pytest.mark.parametrize("dtype", FLOATS)
def test_topk_ranks_nan_first_and_ties_to_the_lower_index(dtype):
    x = np.array([1.0, -3.0, 3.0, 2.0, -3.0, 3.0], dtype=dtype)
    assert OPS["topk"](x, 3).tolist() == [1, 2, 4]
    y = np.array([np.inf, 1.0, np.nan, -np.inf, 0.0], dtype=dtype)
    assert OPS["topk"](y, 1).tolist() == [2]
    assert OPS["topk"](y, 3).tolist() == [0, 2, 3]


def test_invalid_arguments_are_refused_like_the_reference():
    x = data(5, np.float32)
    for op, args in (("topk", (x, 6)), ("topk", (x, -1)), ("stratified_indices", (1, 3, 4)),
                     ("quantize", (x, 2, 4, "max", 1, False, 0)), ("quantize", (x, 8, 4, "median", 127, False, 0))):
        with pytest.raises(ValueError):
            ref.OPS[op](*args)
        with pytest.raises(ValueError):
            OPS[op](*args)


@pytest.mark.parametrize("base", [0, 1, 2**63, 2**64 - 1])
def test_random_numbers(base):
    for n in SIZES:
        assert same(OPS["uniform"](base, n), ref.uniform(base, n)), n
    for n, k in ((0, 0), (1, 1), (37, 37), (37, 5), (2501, 1), (2501, 833)):
        assert same(OPS["stratified_indices"](base, n, k), ref.stratified_indices(base, n, k)), (n, k)


@pytest.mark.parametrize("dtype", FLOATS)
def test_scatter_add(dtype):
    rng = np.random.default_rng(3)
    dense = data(600, dtype, seed=1)
    idx = rng.permutation(599)[:301].astype(np.int32)  # unique, shuffled, int32
    idx[-1] = -1  # element 599, counted from the end
    vals = data(301, dtype, seed=2, specials=False)
    # one NaN on either side, and inf + -inf; NaN on both sides is left out: NumPy itself picks
    # the payload differently in its SIMD body and its scalar tail
    dense[idx[:4]] = np.array([np.nan, 1.0, np.inf, -np.nan], dtype=dtype)
    vals[:4] = np.array([2.0, -np.nan, -np.inf, 0.5], dtype=dtype)
    got, want = dense.copy(), dense.copy()
    assert OPS["scatter_add"](got, idx, vals) is None
    ref.scatter_add(want, idx, vals)
    assert same(got, want)


def test_scatter_add_integers():
    got, want = np.arange(50, dtype=np.int64), np.arange(50, dtype=np.int64)
    idx, vals = np.array([3, 0, 49, 7]), np.array([-5, 2**40, 1, 9], dtype=np.int64)
    OPS["scatter_add"](got, idx, vals)
    ref.scatter_add(want, idx, vals)
    assert same(got, want)


@pytest.mark.parametrize("bits,qmax", [(8, 127), (4, 7)])
@pytest.mark.parametrize("kind", ["max", "l2"])
@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("n,block", [(0, 4), (1, 4), (37, 5), (2501, 64), (2501, 2501)])
def test_quantize(bits, qmax, kind, stochastic, n, block):
    x = data(n, np.float32, specials=False)
    got = OPS["quantize"](x, bits, block, kind, qmax, stochastic, BASE)
    want = ref.quantize(x, bits, block, kind, qmax, stochastic, BASE)
    assert same(got, want)
    assert same(OPS["dequantize"](*got, n, bits, block), ref.dequantize(*want, n, bits, block))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("kind", ["max", "l2", "mean"])
def test_quantize_specials(dtype, kind):
    """NaN, +-inf, +-0.0 in the first block, a lone negative NaN in another, overflow to inf, a
    subnormal scale; inputs of every float dtype (converted to float32 as in the reference)."""
    x = data(300, dtype)
    x[100] = -np.nan
    x[200:210] = np.finfo(dtype).max
    x[250:260] = np.float32(1e-42)
    for bits, qmax, stochastic in ((8, 127, False), (4, 7, True)):
        got = OPS["quantize"](x, bits, 50, kind, qmax, stochastic, 12345)
        want = ref.quantize(x, bits, 50, kind, qmax, stochastic, 12345)
        assert same(got, want)
        assert same(OPS["dequantize"](*got, x.size, bits, 50), ref.dequantize(*want, x.size, bits, 50))


def test_scale_sums_follow_the_two_level_order(monkeypatch):
    """Blocks larger than REDUCE_CHUNK sum per chunk, then the chunk sums (shrunk here to 16).

    The crafted 32-element blocks put the float64 sum exactly on a float32 rounding midpoint when
    summed in one sequence, and just above it in the contract's order: the tiny values of the
    second chunk only count when they are summed among themselves first.
    """
    monkeypatch.setattr(ref, "REDUCE_CHUNK", 16)
    tiny = np.full(16, 2.0**-27, dtype=np.float32)
    squares = np.concatenate([np.array([1.0, 2.0**-12, 2.0**-12, 2.0**-24] + [0.0] * 12, np.float32), tiny])
    absolute = np.concatenate([np.array([1.0, 2.0**-24] + [0.0] * 14, np.float32), tiny**2])
    for x, kind in ((squares, "l2"), (absolute, "mean")):
        want = ref.quantize(x, 8, 32, kind, 1, False, 0)
        assert same(OPS["quantize"](x, 8, 32, kind, 1, False, 0), want), kind
        with monkeypatch.context() as m:  # the crafting works: one sequence rounds the other way
            m.setattr(ref, "REDUCE_CHUNK", 32)
            assert not same(ref.quantize(x, 8, 32, kind, 1, False, 0)[1], want[1]), kind
    assert same(OPS["sign_pack"](absolute, 32), ref.sign_pack(absolute, 32))
    x = data(237, np.float32, specials=False)
    for kind in ("max", "l2", "mean"):
        assert same(OPS["quantize"](x, 8, 50, kind, 127, False, 1), ref.quantize(x, 8, 50, kind, 127, False, 1))
    x[70] = np.nan  # in the second chunk of the second block
    assert same(OPS["sign_pack"](x, 50), ref.sign_pack(x, 50))
    assert same(OPS["quantize"](x, 4, 50, "l2", 7, True, 1), ref.quantize(x, 4, 50, "l2", 7, True, 1))


@pytest.mark.parametrize("n,block", [(0, 8), (1, 8), (13, 8), (37, 37), (2501, 64), (2501, 2501)])
def test_sign(n, block):
    x = data(n, np.float32)
    got, want = OPS["sign_pack"](x, block), ref.sign_pack(x, block)
    assert same(got, want)
    assert same(OPS["sign_unpack"](*got, n, block), ref.sign_unpack(*want, n, block))


def test_decoding_with_nan_and_inf_scales():
    """Arithmetic NaNs come out with NumPy's x86 bits: a NaN scale's payload, quieted, sign kept;
    ``0 * inf`` the negative default NaN."""
    scales = np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0xFF800123, 0x00000000, 0x80000000, 0x3FC00000],
                      dtype=np.uint32).view(np.float32)
    n, block = 2 * scales.size, 2
    codes = np.tile(np.array([0, 3], dtype=np.int8), scales.size)
    codes[1::4] = -1
    for bits in (8, 4):
        packed = ref.pack_codes(codes, bits)
        assert same(OPS["dequantize"](packed, scales, n, bits, block), ref.dequantize(packed, scales, n, bits, block))
    packed = np.array([0b10110110, 0b01101011], dtype=np.uint8)
    assert same(OPS["sign_unpack"](packed, scales, n, block), ref.sign_unpack(packed, scales, n, block))


def test_half_precision():
    rng = np.random.default_rng(11)
    edges = np.array([65504, 65519.99, 65520, 65536, 6.1035e-05, 6.0976e-05, 5.96e-08, 2.98e-08, 2.99e-08,
                      1.0 + 2**-11, 1.0 + 3 * 2**-11, 3.4e38, 1e-45, 0.0, np.inf, np.nan], dtype=np.float32)
    rand = rng.integers(0, 2**32, 2000, dtype=np.uint32).view(np.float32)  # NaN payloads, subnormals, ...
    x = np.concatenate([edges, -edges, np.nextafter(edges, np.float32(np.inf)), np.nextafter(edges, np.float32(0)),
                        rand])
    assert same(OPS["fp16_encode"](x), ref.fp16_encode(x))
    assert same(OPS["bf16_encode"](x), ref.bf16_encode(x))
    every_half = np.arange(65536, dtype=np.uint16)
    assert same(OPS["fp16_decode"](every_half), ref.fp16_decode(every_half))
    assert same(OPS["bf16_decode"](every_half), ref.bf16_decode(every_half))
    for n in (0, 1, 37):
        assert same(OPS["fp16_encode"](x[:n]), ref.fp16_encode(x[:n]))
        assert same(OPS["bf16_decode"](every_half[:n]), ref.bf16_decode(every_half[:n]))


def test_out_parameters():
    """Results land in ``out`` (returned as given): directly when it fits, else by a copy."""
    x = data(101, np.float32)
    pairs = (("quantize", (x, 4, 16, "max", 7, True, 3), (np.empty(51, np.uint8), np.empty(7, np.float32))),
             ("sign_pack", (x, 16), (np.empty(13, np.uint8), np.empty(7, np.float32))))
    for op, args, outs in pairs:
        want = ref.OPS[op](*args)
        got = OPS[op](*args, out=outs)
        assert got is outs and same(got, want)
    packed, scales = ref.quantize(x, 8, 16, "l2", 127, False, 0)
    signs, means = ref.sign_pack(x, 16)
    halves = ref.fp16_encode(x)
    for op, args, dtype in (("dequantize", (packed, scales, 101, 8, 16), np.float32),
                            ("sign_unpack", (signs, means, 101, 16), np.float32),
                            ("fp16_encode", (x,), np.uint16), ("bf16_encode", (x,), np.uint16),
                            ("fp16_decode", (halves,), np.float32), ("bf16_decode", (halves,), np.float32),
                            ("fp16_decode", (halves,), np.float64)):  # a dtype the kernel cannot write: copied
        want = ref.OPS[op](*args, out=np.zeros(101, dtype))
        out = np.zeros(101, dtype)
        assert OPS[op](*args, out=out) is out and same(out, want), (op, dtype)


@pytest.mark.parametrize("n,m,r,size", [(1, 1, 1, 1), (7, 5, 3, 33), (40, 37, 4, 40 * 37 - 9), (9, 9, 0, 81),
                                         (5, 5, 2, 0)])
def test_lowrank_reconstruct(n, m, r, size):
    rng = np.random.default_rng([n, m, r])
    p = (rng.standard_normal((n, r)) * 10.0 ** rng.integers(-3, 4, (n, r))).astype(np.float32)
    q = (rng.standard_normal((m, r)) * 10.0 ** rng.integers(-3, 4, (m, r))).astype(np.float32)
    want = ref.lowrank_reconstruct(p, q, size)
    assert same(OPS["lowrank_reconstruct"](p, q, size), want)
    out = np.full(size, np.nan, np.float32)
    assert OPS["lowrank_reconstruct"](p, q, size, out=out) is out and same(out, want)


@pytest.mark.parametrize("dtype", FLOATS)
def test_csr(dtype):
    rng = np.random.default_rng(5)
    mat = data(45 * 61, dtype).reshape(45, 61)
    mat[rng.random(mat.shape) < 0.8] = 0
    mat[::4] = 0  # empty rows, the first and last among them
    mat[-1] = 0
    mat[1, :3] = np.array([-0.0, np.nan, 1.0], dtype=dtype)
    for m in (mat, np.zeros((3, 0), dtype), np.zeros((0, 5), dtype), np.zeros((4, 4), dtype),
              np.ones((1, 1), dtype), mat[:, 1:40]):  # the last one not contiguous
        got, want = OPS["csr_build"](m), ref.csr_build(m)
        assert same(got, want), m.shape
        assert same(OPS["csr_densify"](*got, m.shape, dtype), ref.csr_densify(*want, m.shape, dtype)), m.shape


def test_scales_follow_the_lane_order():
    """The reference sums in 8 lanes; a plain scan gives 2**53 here instead of 2**53 + 14."""
    x = np.ones(48, dtype=np.float32)
    x[::16] = 2.0**53
    cases = [(OPS["sign_pack"](x, 16), ref.sign_pack(x, 16)),
             (OPS["quantize"](x, 8, 16, "l2", 127, False, 0), ref.quantize(x, 8, 16, "l2", 127, False, 0))]
    for got, want in cases:
        for g, w in zip(got, want, strict=True):
            assert np.asarray(g).tobytes() == np.asarray(w).tobytes()
