"""The CuPy provider against the NumPy reference: bitwise identical results on fresh random inputs.

Every test needs a CUDA device that CuPy can use (marker ``gpu``); without one the whole module
skips with the reason :func:`mpicoll.kernels.provider_status` gives. Inputs are drawn from a new
seed on every run (printed, so a failure can be replayed by fixing it in ``rng``) and mix
ordinary values at several scales with ties, ``+-0.0``, ``+-inf``, ``+-nan`` and subnormals.

NaN bits: the kernels reproduce what NumPy computes on an x86-64 host, where an invalid
operation (``0 * inf``) gives the NaN ``0xffc00000``. On another host architecture the
comparison only requires NaNs in the same places, and the x86-specific cases are skipped.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
from mpicoll.kernels import provider_ops, provider_status, reference

try:
    import cupy
except ImportError:  # provider_status explains; every test skips
    cupy = None

STATUS = provider_status("cupy")[0]
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not STATUS.available, reason=f"cupy provider unavailable: {STATUS.reason}"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]  # the reference meeting inf and NaN

X86 = platform.machine().lower() in ("x86_64", "amd64")
SIZES = [0, 1, 7, 100003]
FLOATS = [np.float16, np.float32, np.float64]
UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@pytest.fixture(scope="module")
def ops():
    return provider_ops("cupy")


@pytest.fixture
def rng():
    seed = int(np.random.SeedSequence().entropy % (1 << 63))
    print(f"seed = {seed}")  # shown with a failure: replay with default_rng(seed)
    return np.random.default_rng(seed)


def dev(a: np.ndarray):
    return cupy.asarray(a)


def check(got, want: np.ndarray, what: str) -> None:
    """``got`` (device) equals ``want`` bit for bit: dtype, shape and bytes."""
    got = cupy.asnumpy(got)
    assert isinstance(want, np.ndarray)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    unsigned = UNSIGNED[want.dtype.itemsize]
    g, w = got.reshape(-1).view(unsigned), want.reshape(-1).view(unsigned)
    if not X86 and want.dtype.kind == "f":  # see the module docstring: NaN places only
        nan = np.isnan(want.reshape(-1))
        assert np.array_equal(np.isnan(got.reshape(-1)), nan), f"{what}: NaNs in other places"
        g, w = g[~nan], w[~nan]
    bad = np.flatnonzero(g != w)
    assert bad.size == 0, (f"{what}: {bad.size} of {w.size} differ; first at {bad[:5].tolist()}: "
                           f"got {[hex(v) for v in g[bad[:5]]]}, want {[hex(v) for v in w[bad[:5]]]}")


def sample(rng: np.random.Generator, n: int, dtype, specials: bool = True) -> np.ndarray:
    """Normal values at scales 1e-3..1e2, some magnitudes repeated (ties), and special values."""
    x = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3, n)).astype(dtype)
    if n == 0:
        return x
    m = max(1, n // 10)
    x[rng.integers(0, n, m)] = x[rng.integers(0, n, m)] * rng.choice([-1, 1], m).astype(dtype)
    if specials:
        tiny = np.finfo(dtype).smallest_subnormal
        pool = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, tiny, -3 * tiny], dtype=dtype)
        k = max(1, n // 50)
        x[rng.integers(0, n, k)] = rng.choice(pool, k)
    return x


def few_values(rng: np.random.Generator, n: int, dtype) -> np.ndarray:
    """Mostly ties: a handful of magnitudes of both signs, zeros of both signs, NaN and inf."""
    pool = np.array([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, np.inf, np.nan, -np.nan], dtype=dtype)
    return rng.choice(pool, n)


def random_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 with uniformly random bit patterns: every exponent, NaN payloads, subnormals."""
    return rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)


def blocks(n: int, candidates: tuple[int, ...]) -> list[int]:
    """The candidate block sizes that fit ``n`` (a block larger than the array once is enough)."""
    fitting = [b for b in candidates if b <= max(n, 1)]
    larger = [b for b in candidates if b > max(n, 1)]
    return fitting + larger[:1]


def test_table_matches_reference(ops):
    assert set(ops) == set(reference.OPS)


# ---------------------------------------------------------------- random numbers


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("base", [0, 0x123456789ABCDEF, (1 << 64) - 5])
def test_uniform(ops, n, base):
    check(ops["uniform"](np.uint64(base), n), reference.uniform(np.uint64(base), n), "uniform")


@pytest.mark.parametrize(("n", "k"), [(0, 0), (1, 0), (1, 1), (7, 3), (7, 7), (100003, 1), (100003, 33334),
                                      (100003, 100003)])
def test_stratified_indices(ops, rng, n, k):
    base = np.uint64(rng.integers(0, 1 << 64, dtype=np.uint64))
    check(ops["stratified_indices"](base, n, k), reference.stratified_indices(base, n, k), "stratified")
    check(ops["stratified_indices"](np.uint64((1 << 64) - 2), n, k),
          reference.stratified_indices((1 << 64) - 2, n, k), "stratified, wrapping counters")
    with pytest.raises(ValueError):
        ops["stratified_indices"](base, n, n + 1)


# ---------------------------------------------------------------- selection


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("make", [sample, few_values])
def test_topk(ops, rng, dtype, n, make):
    x = make(rng, n, dtype)
    for k in sorted({0, min(1, n), n // 3, n}):
        check(ops["topk"](dev(x), k), reference.topk(x, k), f"topk k={k}")
    with pytest.raises(ValueError):
        ops["topk"](dev(x), n + 1)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", SIZES)
def test_threshold(ops, rng, dtype, n):
    x = sample(rng, n, dtype)
    for tau in (0.0, 1e-30, 0.5, float(np.abs(x[0])) if n else 1.0, np.inf, np.nan):
        check(ops["threshold"](dev(x), tau), reference.threshold(x, tau), f"threshold tau={tau}")


@pytest.mark.parametrize("dtype", [*FLOATS, np.int32, np.bool_])
@pytest.mark.parametrize("n", SIZES)
def test_nonzero(ops, rng, dtype, n):
    x = sample(rng, n, dtype) if np.dtype(dtype).kind == "f" else rng.integers(-2, 3, n).astype(dtype)
    check(ops["nonzero"](dev(x)), reference.nonzero(x), "nonzero")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", SIZES)
def test_scatter_add(ops, rng, dtype, n):
    dense = sample(rng, n, dtype, specials=False)  # NaN meeting NaN: see test_x86_nan_rules
    idx = rng.permutation(n)[: n // 2]
    idx[::5] -= n  # negative indices count from the end, as in NumPy
    vals = sample(rng, idx.size, dtype)
    got = dev(dense)
    ops["scatter_add"](got, dev(idx), dev(vals))
    reference.scatter_add(dense, idx, vals)
    check(got, dense, "scatter_add")


def test_scatter_add_casts_and_strides(ops, rng):
    dense = sample(rng, 1001, np.float32, specials=False)
    idx = rng.permutation(501)[:200]
    vals = sample(rng, 200, np.float64)  # cast to float32 first, as the reference does
    got = dev(dense)
    ops["scatter_add"](got[::2], dev(idx), dev(vals))
    reference.scatter_add(dense[::2], idx, vals)
    check(got, dense, "scatter_add into a strided view")


# ---------------------------------------------------------------- quantization


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("kind", ["max", "l2", "mean"])
@pytest.mark.parametrize("bits", [4, 8])
def test_quantize_dequantize(ops, rng, bits, kind, stochastic, n):
    for dtype in FLOATS:
        x = sample(rng, n, dtype)
        base = np.uint64(rng.integers(0, 1 << 64, dtype=np.uint64))
        # 70001: two chunks of reference.ordered_sum; 16384-65537: the tiled scale kernels' thresholds
        for block in blocks(n, (1, 61, 4096, 16384, 65536, 65537, 70001)):
            for qmax in ((1 << (bits - 1)) - 1, 3):
                args = (bits, block, kind, qmax, stochastic, base)
                what = f"quantize {dtype.__name__} block={block} qmax={qmax}"
                packed, scales = ops["quantize"](dev(x), *args)
                want_packed, want_scales = reference.quantize(x, *args)
                check(scales, want_scales, what + " scales")
                check(packed, want_packed, what + " codes")
                check(ops["dequantize"](dev(want_packed), dev(want_scales), n, bits, block),
                      reference.dequantize(want_packed, want_scales, n, bits, block), what + " dequantize")


def test_quantize_rejects_bad_arguments(ops):
    x = dev(np.ones(10, dtype=np.float32))
    with pytest.raises(ValueError):
        ops["quantize"](x, 3, 4, "max", 3, False, 0)
    with pytest.raises(ValueError):
        ops["quantize"](x, 8, 4, "median", 127, False, 0)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", SIZES)
def test_sign_pack_unpack(ops, rng, dtype, n):
    x = sample(rng, n, dtype)
    for block in blocks(n, (1, 8, 13, 4096, 70001)):
        packed, scales = ops["sign_pack"](dev(x), block)
        want_packed, want_scales = reference.sign_pack(x, block)
        check(packed, want_packed, f"sign bits block={block}")
        check(scales, want_scales, f"sign scales block={block}")
        check(ops["sign_unpack"](dev(want_packed), dev(want_scales), n, block),
              reference.sign_unpack(want_packed, want_scales, n, block), f"sign_unpack block={block}")


def test_out_parameter(ops, rng):
    """``out=`` receives the results, written in place when it fits, copied otherwise (as ``_into``)."""
    n, block = 1001, 64
    x = sample(rng, n, np.float32)
    packed, scales = reference.quantize(x, 4, block, "l2", 7, True, 5)
    nblocks = -(-n // block)
    for fits in (True, False):  # a contiguous array of the right dtype, or a strided view
        def buffer(size, dtype, fits=fits):
            return cupy.zeros(size, dtype=dtype) if fits else cupy.zeros(2 * size, dtype=dtype)[::2]

        out = (buffer(packed.size, np.uint8), buffer(nblocks, np.float32))
        assert ops["quantize"](dev(x), 4, block, "l2", 7, True, 5, out=out) is out
        check(out[0], packed, "quantize out packed")
        check(out[1], scales, "quantize out scales")
        out = buffer(n, np.float32)
        assert ops["dequantize"](dev(packed), dev(scales), n, 4, block, out=out) is out
        check(out, reference.dequantize(packed, scales, n, 4, block), "dequantize out")
        out = (buffer(-(-n // 8), np.uint8), buffer(nblocks, np.float32))
        ops["sign_pack"](dev(x), block, out=out)
        want = reference.sign_pack(x, block)
        check(out[0], want[0], "sign_pack out bits")
        check(out[1], want[1], "sign_pack out scales")
        out = buffer(n, np.float32)
        ops["sign_unpack"](dev(want[0]), dev(want[1]), n, block, out=out)
        check(out, reference.sign_unpack(*want, n, block), "sign_unpack out")
        for name, data, dtype in (("fp16_encode", x, np.uint16), ("bf16_encode", x, np.uint16),
                                  ("fp16_decode", reference.fp16_encode(x), np.float32),
                                  ("bf16_decode", reference.bf16_encode(x), np.float32)):
            out = buffer(n, dtype)
            assert ops[name](dev(data), out=out) is out
            check(out, reference.OPS[name](data), f"{name} out")


# ---------------------------------------------------------------- 16-bit floats


def rounding_boundaries() -> np.ndarray:
    """float32 values at and next to every midpoint between neighbouring halves (RNE ties), both signs."""
    halves = np.arange(0x7C01, dtype=np.uint16).view(np.float16).astype(np.float64)  # 0 .. inf
    mids = ((halves[:-1] + halves[1:]) / 2).astype(np.float32)  # exact: 12 significant bits
    near = [mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(np.inf))]
    x = np.concatenate([*near, np.float32(65520.0) * np.ones(1, np.float32)])
    return np.concatenate([x, -x])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", SIZES)
def test_fp16_bf16_encode(ops, rng, dtype, n):
    inputs = [sample(rng, n, dtype)] + ([random_bits(rng, n)] if dtype is np.float32 else [])
    for x in inputs:
        check(ops["fp16_encode"](dev(x)), reference.fp16_encode(x), "fp16_encode")
        check(ops["bf16_encode"](dev(x)), reference.bf16_encode(x), "bf16_encode")


def test_fp16_bf16_encode_boundaries(ops):
    x = rounding_boundaries()
    check(ops["fp16_encode"](dev(x)), reference.fp16_encode(x), "fp16_encode at rounding boundaries")
    check(ops["bf16_encode"](dev(x)), reference.bf16_encode(x), "bf16_encode at rounding boundaries")


def test_fp16_bf16_decode_all_patterns(ops):
    h = np.arange(1 << 16, dtype=np.uint16)
    check(ops["fp16_decode"](dev(h)), reference.fp16_decode(h), "fp16_decode")
    check(ops["fp16_decode"](dev(h.view(np.float16))), reference.fp16_decode(h.view(np.float16)), "fp16_decode")
    check(ops["bf16_decode"](dev(h)), reference.bf16_decode(h), "bf16_decode")


# ---------------------------------------------------------------- CSR


@pytest.mark.parametrize("dtype", [*FLOATS, np.int32])
@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (1, 1), (7, 13), (317, 331)])
def test_csr(ops, rng, dtype, shape):
    rows, cols = shape
    floats = np.dtype(dtype).kind == "f"
    mat = sample(rng, rows * cols, dtype) if floats else rng.integers(-3, 4, rows * cols).astype(dtype)
    mat = mat.reshape(shape)
    mat[rng.random(shape) < 0.8] = 0
    if rows > 2:
        mat[1] = 0  # an empty row
    if floats and mat.size:
        mat.flat[rng.integers(0, mat.size, 3)] = -0.0  # not a nonzero
    got = ops["csr_build"](dev(mat))
    want = reference.csr_build(mat)
    for name, g, w in zip(("indptr", "indices", "values"), got, want, strict=True):
        check(g, w, f"csr_build {name}")
    check(ops["csr_densify"](*(dev(a) for a in want), shape, dtype),
          reference.csr_densify(*want, shape, dtype), "csr_densify")


# ---------------------------------------------------------------- low rank (PowerSGD)


@pytest.mark.parametrize(("n", "m", "r", "size"), [(1, 1, 1, 1), (7, 5, 3, 33), (300, 257, 4, 300 * 257 - 100),
                                                   (64, 64, 0, 4096), (2048, 2048, 8, 2048 * 2048), (5, 5, 2, 0)])
def test_lowrank_reconstruct(ops, rng, n, m, r, size):
    p = (rng.standard_normal((n, r)) * 10.0 ** rng.integers(-3, 4, (n, r))).astype(np.float32)
    q = (rng.standard_normal((m, r)) * 10.0 ** rng.integers(-3, 4, (m, r))).astype(np.float32)
    want = reference.lowrank_reconstruct(p, q, size)
    check(ops["lowrank_reconstruct"](dev(p), dev(q), size), want, "lowrank_reconstruct")
    out = cupy.full(size, np.nan, np.float32)
    assert ops["lowrank_reconstruct"](dev(p), dev(q), size, out=out) is out
    check(out, want, "lowrank_reconstruct into out")


# ---------------------------------------------------------------- x86-64 NaN rules


@pytest.mark.skipif(not X86, reason="NaN bits of invalid operations are host-specific; these are x86-64's")
@pytest.mark.parametrize("dtype", FLOATS)
def test_x86_nan_rules(ops, dtype):
    """NaN meets NaN (which operand wins) and inf - inf (the default NaN), as NumPy on x86-64 does."""
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 1.0, 0.0], dtype=dtype)
    a, b = np.meshgrid(specials, specials)
    dense, vals = a.ravel().copy(), b.ravel().copy()
    got = dev(dense)
    ops["scatter_add"](got, dev(np.arange(dense.size)), dev(vals))
    reference.scatter_add(dense, np.arange(dense.size), vals)
    check(got, dense, "scatter_add of special pairs")
    scales = np.array([np.inf, np.nan, -np.nan, 1.0], dtype=np.float32)  # code 0 * inf: invalid
    packed = np.array([0, 1, 255, 7], dtype=np.uint8)
    check(ops["dequantize"](dev(packed), dev(scales), 4, 8, 1), reference.dequantize(packed, scales, 4, 8, 1),
          "dequantize of special scales")


# ---------------------------------------------------------------- subnormals


def subnormal_mix(rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 subnormals of both signs (most of the array), some normals and signed zeros."""
    tiny = np.finfo(np.float32).smallest_subnormal
    x = (rng.integers(1, 1 << 23, n) * tiny * rng.choice([-1, 1], n)).astype(np.float32)
    x[rng.integers(0, n, n // 10)] = rng.standard_normal(n // 10).astype(np.float32)
    x[rng.integers(0, n, n // 20)] = rng.choice(np.array([0.0, -0.0], np.float32), n // 20)
    return x


def test_subnormals_are_kept(ops, rng):
    """CuPy compiles source with ``-ftz=true`` appended to the caller's options; on the H200 that
    lost the sign bits of negative subnormals in sign_pack and zeroed the scales of subnormal
    blocks. Every float operation must keep subnormals as the host does."""
    n = 4099
    x = subnormal_mix(rng, n)
    for block in (1, 7, 256):
        packed, scales = ops["sign_pack"](dev(x), block)
        want = reference.sign_pack(x, block)
        check(packed, want[0], f"sign bits of subnormals, block={block}")
        check(scales, want[1], f"sign scales of subnormal blocks, block={block}")
        check(ops["sign_unpack"](dev(want[0]), dev(want[1]), n, block), reference.sign_unpack(*want, n, block),
              f"sign_unpack with subnormal scales, block={block}")
        for kind in ("max", "l2", "mean"):
            args = (8, block, kind, 127, False, 3)
            got = ops["quantize"](dev(x), *args)
            want_q = reference.quantize(x, *args)
            check(got[1], want_q[1], f"quantize scales of subnormals, {kind} block={block}")
            check(got[0], want_q[0], f"quantize codes of subnormals, {kind} block={block}")
            check(ops["dequantize"](dev(want_q[0]), dev(want_q[1]), n, 8, block),
                  reference.dequantize(*want_q, n, 8, block), f"dequantize with subnormal scales, {kind}")
    for dtype in (np.float32, np.float64):
        dense = subnormal_mix(rng, n).astype(dtype)
        idx = rng.permutation(n)[: n // 2]
        vals = subnormal_mix(rng, idx.size)  # float32, cast to the dense dtype first
        got = dev(dense)
        ops["scatter_add"](got, dev(idx), dev(vals))
        reference.scatter_add(dense, idx, vals)
        check(got, dense, f"scatter_add of subnormals into {dtype.__name__}")
    p = subnormal_mix(rng, 64 * 3).reshape(64, 3) * np.float32(1e20)  # products near the subnormal range
    q = subnormal_mix(rng, 50 * 3).reshape(50, 3) * np.float32(1e-20)
    check(ops["lowrank_reconstruct"](dev(p), dev(q), 64 * 50), reference.lowrank_reconstruct(p, q, 64 * 50),
          "lowrank_reconstruct into the subnormal range")
    for name in ("fp16_encode", "bf16_encode", "topk"):
        args = (x, n // 3) if name == "topk" else (x,)
        check(ops[name](*(dev(a) if isinstance(a, np.ndarray) else a for a in args)), reference.OPS[name](*args),
              f"{name} of subnormals")


def test_long_blocks_with_finite_data(ops, rng):
    """The shared-memory scale kernels (blocks of >= 16384 elements) on data without NaN, where
    every scale is a number: the max, l2 and mean orders of the contract, and sign's one scale."""
    n = 200003
    x = sample(rng, n, np.float32, specials=False)
    for block in (16384, 65536, 65537, 131072, n):
        for kind in ("max", "l2", "mean"):
            args = (8, block, kind, 127, False, 11)
            got, want = ops["quantize"](dev(x), *args), reference.quantize(x, *args)
            check(got[1], want[1], f"scales, {kind} block={block}")
            check(got[0], want[0], f"codes, {kind} block={block}")
        packed, scales = ops["sign_pack"](dev(x), block)
        want = reference.sign_pack(x, block)
        check(packed, want[0], f"sign bits block={block}")
        check(scales, want[1], f"sign scales block={block}")
