"""Block quantization (8- and 4-bit codes) and 1-bit signs, with the reference's ordered float64 sums."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from ...backend import xp_of
from .. import reference
from ..arrays import deliver, writable
from ..ops import SCALE_KINDS, implements, scale_kind_code
from .common import QUIET32, Array, floor_f32, greater, launch, lesser, mul_f32, mul_f64, rint_f32, uniform_at

# ---------------------------------------------------------------- quantization

_SIGN_OFF32 = np.uint32(0x7FFFFFFF)
_NAN32 = np.uint32(0x7FC00000)  # what NumPy's max reduction returns for a NaN
_DEFAULT_NAN32 = np.uint32(0xFFC00000)  # x86 "real indefinite": 0 * inf, inf - inf


@cuda.jit
def _scale_partials_kernel(x, block, chunk, per_block, kind, partial, nan_bits):
    """One thread per (block, chunk) task: max |x| (kind 0), or the reference's ordered sum of squares
    (1) or of |x| (2) in float64 (element i of the chunk into lane i % 8, each lane in index order,
    then the lanes in order); or the bits of the task's first NaN, quieted."""
    bits = x.view(np.uint32)
    n = x.size
    lanes = cuda.local.array(8, numba.float64)
    for t in range(cuda.grid(1), partial.size, cuda.gridsize(1)):
        b = t // per_block
        lo = b * block + (t - b * per_block) * chunk
        hi = lesser(lo + chunk, lesser((b + 1) * block, n))
        acc = 0.0
        for k in range(8):
            lanes[k] = 0.0
        first_nan = np.uint32(0)
        for i in range(lo, hi):
            v = x[i]
            if v != v:
                first_nan = bits[i] | QUIET32
                break
            d = np.float64(v)
            if kind == 0:
                acc = greater(acc, abs(d))
            elif kind == 1:
                lanes[(i - lo) & 7] += mul_f64(d, d)  # exact anyway (a float32 squared fits a float64)
            else:
                lanes[(i - lo) & 7] += abs(d)
        if kind != 0:
            for k in range(8):
                acc += lanes[k]
        partial[t] = acc
        nan_bits[t] = first_nan


@cuda.jit
def _scale_finish_kernel(partial, nan_bits, block, per_block, n, kind, qmax, out):
    """One thread per block: its task results in order (the reference's two-level order), then
    ``norm / qmax`` in float32; a NaN norm gets the bits NumPy gives it on x86."""
    out_bits = out.view(np.uint32)
    for b in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        acc = 0.0
        nan = np.uint32(0)
        for t in range(b * per_block, (b + 1) * per_block):
            if nan_bits[t] != np.uint32(0):
                nan = nan_bits[t]
                break
            if kind == 0:
                acc = greater(acc, partial[t])
            else:
                acc += partial[t]
        if nan != np.uint32(0):
            if kind == 0:
                out_bits[b] = _NAN32
            elif kind == 1:
                out_bits[b] = nan  # squaring keeps the sign of a NaN
            else:
                out_bits[b] = nan & _SIGN_OFF32
        elif kind == 0:
            out[b] = np.float32(acc) / qmax
        elif kind == 1:
            out[b] = np.float32(math.sqrt(acc)) / qmax
        else:
            out[b] = np.float32(acc / (lesser((b + 1) * block, n) - b * block)) / qmax


def _block_scales(x: Array, block: int, kind: int, qmax: float, out: Array) -> None:
    """Per-block scales into ``out``: partial results per (block, chunk of ``REDUCE_CHUNK``), then
    per block. One thread per task keeps each float64 sum sequential, in index order."""
    if out.size == 0:
        return
    chunk = int(reference.REDUCE_CHUNK)  # read per call, so the contract has one source
    per_block = -(-block // chunk)
    xp = xp_of(x)
    partial = xp.empty(out.size * per_block, dtype=np.float64)
    nan_bits = xp.empty(out.size * per_block, dtype=np.uint32)
    launch(_scale_partials_kernel, partial.size, x, np.int64(block), np.int64(chunk), np.int64(per_block),
           np.int64(kind), partial, nan_bits)
    launch(_scale_finish_kernel, out.size, partial, nan_bits, np.int64(block), np.int64(per_block),
           np.int64(x.size), np.int64(kind), np.float32(qmax), out)


@cuda.jit(device=True)
def _code(xi, s, q, stochastic, base, i):
    """One code: ``rint(x * inv)`` or ``floor(x * inv + u_i)``, clipped to [-q, q], NaN -> 0."""
    inv = np.float32(1) / s if s > np.float32(0) else np.float32(0)
    v = mul_f32(xi, inv)  # rounded on its own, as the reference does: never fused with the add
    if stochastic:
        c = floor_f32(v + uniform_at(base, i))
    else:
        c = rint_f32(v)
    if c != c:
        return np.int32(0)
    return np.int32(lesser(greater(c, -q), q))


@cuda.jit
def _quantize_kernel(x, scales, bits, block, q, stochastic, base, out):
    n = x.size
    per_byte = 8 // bits
    low_bits = (1 << bits) - 1
    for j in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        byte = 0
        for t in range(per_byte):
            i = j * per_byte + t
            if i < n:
                code = _code(x[i], scales[i // block], q, stochastic, base, i)
                byte |= (np.int64(code) & low_bits) << (t * bits)
        out[j] = byte


@implements("quantize")
def quantize(x: Array, bits: int, block: int, scale_kind: str, qmax: int, stochastic: bool, base: int,
             out: tuple[Array, Array] | None = None) -> tuple[Array, Array]:
    """Symmetric per-block quantization to ``bits``-bit signed codes, packed (see the reference).

    Args:
        x: 1-D array, converted to float32.
        bits: 8 (one code per byte) or 4 (two per byte, even element in the low nibble).
        block: elements per scale.
        scale_kind: ``"max"``, ``"l2"`` or ``"mean"``.
        qmax: the largest code magnitude.
        stochastic: ``floor(v + u)`` with the counter hash instead of round-half-even.
        base: the 64-bit stream base of the uniforms.
        out: optional ``(packed, scales)`` to write into.

    Returns:
        ``(packed codes, scales)``: ``ceil(n * bits / 8)`` uint8 and ``ceil(n / block)`` float32.
    """
    kind = scale_kind_code(scale_kind)
    xp = xp_of(x)
    x = xp.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    packed = writable(out and out[0], xp, (x.size * bits + 7) // 8, np.uint8)
    scales = writable(out and out[1], xp, -(-x.size // block), np.float32)
    _block_scales(x, block, kind, qmax, scales)
    launch(_quantize_kernel, packed.size, x, scales, np.int64(bits), np.int64(block), np.float32(qmax),
           bool(stochastic), np.uint64(base), packed)
    return deliver((packed, scales), out)


@cuda.jit
def _dequantize_kernel(packed, scales, bits, block, out):
    scale_bits = scales.view(np.uint32)
    out_bits = out.view(np.uint32)
    per_byte = 8 // bits
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        c = (np.int64(packed[i // per_byte]) >> ((i % per_byte) * bits)) & ((1 << bits) - 1)
        if c >= 1 << (bits - 1):
            c -= 1 << bits
        b = i // block
        s = scales[b]
        if s != s:  # x86 keeps the NaN operand (quieted); a GPU would make its canonical NaN
            out_bits[i] = scale_bits[b] | QUIET32
        elif c == 0 and math.isinf(s):  # 0 * inf: x86's default NaN
            out_bits[i] = _DEFAULT_NAN32
        else:
            out[i] = np.float32(c) * s


@implements("dequantize")
def dequantize(packed: Array, scales: Array, n: int, bits: int, block: int, out: Array | None = None) -> Array:
    """``code_i * scale_b`` in float32: the inverse of :func:`quantize` up to rounding.

    Args:
        packed: uint8 codes as :func:`quantize` packs them.
        scales: float32 per-block scales.
        n: number of elements.
        bits: 4 or 8.
        block: elements per scale.
        out: optional float32 array to write into.

    Returns:
        ``n`` float32 values (``out`` when given).
    """
    xp = xp_of(packed)
    result = writable(out, xp, n, np.float32)
    launch(_dequantize_kernel, n, xp.ascontiguousarray(packed).reshape(-1),
           xp.ascontiguousarray(scales, dtype=np.float32).reshape(-1), np.int64(bits), np.int64(block), result)
    return deliver(result, out)



@cuda.jit
def _sign_bits_kernel(x, out):
    n = x.size
    for j in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        byte = 0
        for t in range(8):
            i = 8 * j + t
            if i < n and x[i] < np.float32(0):
                byte |= 1 << t
        out[j] = byte


@implements("sign_pack")
def sign_pack(x: Array, block: int, out: tuple[Array, Array] | None = None) -> tuple[Array, Array]:
    """1 bit per element (1 where ``x < 0``; element ``8j+t`` is bit ``t`` of byte ``j``), and
    per-block scales ``mean |x|``.

    Args:
        x: 1-D array, converted to float32.
        block: elements per scale.
        out: optional ``(packed, scales)`` to write into.

    Returns:
        ``(packed bits, scales)``: ``ceil(n / 8)`` uint8 and ``ceil(n / block)`` float32.
    """
    xp = xp_of(x)
    x = xp.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    packed = writable(out and out[0], xp, (x.size + 7) // 8, np.uint8)
    scales = writable(out and out[1], xp, -(-x.size // block), np.float32)
    _block_scales(x, block, SCALE_KINDS["mean"], 1.0, scales)
    launch(_sign_bits_kernel, packed.size, x, packed)
    return deliver((packed, scales), out)


@cuda.jit
def _sign_unpack_kernel(packed, scales, block, out):
    scale_bits = scales.view(np.uint32)
    out_bits = out.view(np.uint32)
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        b = i // block
        s = scales[b]
        if s != s:  # +-1 * NaN on x86: the NaN, quieted, sign untouched
            out_bits[i] = scale_bits[b] | QUIET32
        elif (packed[i >> 3] >> (i & 7)) & 1:
            out[i] = np.float32(-1) * s
        else:
            out[i] = np.float32(1) * s


@implements("sign_unpack")
def sign_unpack(packed: Array, scales: Array, n: int, block: int, out: Array | None = None) -> Array:
    """``(1 - 2 * bit) * scale_b`` in float32.

    Args:
        packed: uint8 sign bits as :func:`sign_pack` packs them.
        scales: float32 per-block scales.
        n: number of elements.
        block: elements per scale.
        out: optional float32 array to write into.

    Returns:
        ``n`` float32 values (``out`` when given).
    """
    xp = xp_of(packed)
    result = writable(out, xp, n, np.float32)
    launch(_sign_unpack_kernel, n, xp.ascontiguousarray(packed).reshape(-1),
           xp.ascontiguousarray(scales, dtype=np.float32).reshape(-1), np.int64(block), result)
    return deliver(result, out)
