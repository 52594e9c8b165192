"""Block quantization (8- and 4-bit codes) and 1-bit signs, with the reference's ordered float64 sums."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..ops import implements, scale_kind_code
from .common import CHUNK, OPTS, uniform_at


@njit(inline="always")
def _task(t, cpb, block, n):
    """Element range ``[lo, hi)`` and block of task ``t``: chunk ``t % cpb`` of block ``t // cpb``."""
    b = t // cpb
    lo = b * block + (t - b * cpb) * CHUNK
    return b, lo, min(lo + CHUNK, min((b + 1) * block, n))


@njit(inline="always")
def _term(v, kind):
    return v * v if kind == 1 else abs(v)


@njit(inline="always")
def _lane_sum(xs, kind):
    """The reference's ordered_sum of one chunk: 8 lanes (element i in lane i % 8), then the lanes in order."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    full = xs.size // 8 * 8
    for g in range(0, full, 8):
        s0 += _term(np.float64(xs[g]), kind)
        s1 += _term(np.float64(xs[g + 1]), kind)
        s2 += _term(np.float64(xs[g + 2]), kind)
        s3 += _term(np.float64(xs[g + 3]), kind)
        s4 += _term(np.float64(xs[g + 4]), kind)
        s5 += _term(np.float64(xs[g + 5]), kind)
        s6 += _term(np.float64(xs[g + 6]), kind)
        s7 += _term(np.float64(xs[g + 7]), kind)
    lanes = np.array([s0, s1, s2, s3, s4, s5, s6, s7])
    for i in range(full, xs.size):
        lanes[i - full] += _term(np.float64(xs[i]), kind)
    total = 0.0
    for k in range(8):
        total += lanes[k]
    return total


@njit(inline="always")
def _chunk_max(xs):
    """max |x| of a chunk, NaN if any element is NaN (branch-free, so it vectorizes)."""
    m = np.float32(0)
    nan = False
    for v in xs:
        a = abs(v)
        nan |= a != a
        m = max(m, a)
    return np.float64(np.nan) if nan else np.float64(m)


@njit(**OPTS)
def _scales(x, block, kind, qmax, out):
    """Per block: kind 0 max|x|, 1 L2 norm, 2 mean|x|, divided by qmax, in the reference's order."""
    n = x.size
    cpb = (block + CHUNK - 1) // CHUNK
    partial = np.zeros(out.size * cpb, dtype=np.float64)
    for t in prange(out.size * cpb):
        _, lo, hi = _task(t, cpb, block, n)
        if lo < hi:
            partial[t] = _chunk_max(x[lo:hi]) if kind == 0 else _lane_sum(x[lo:hi], kind)
    _finish_scales(partial, cpb, block, n, kind, qmax, out)


@njit(**OPTS)
def _finish_scales(partial, cpb, block, n, kind, qmax, out):
    """Combine each block's chunk results in order (max, or float64 sum) into ``norm / qmax``."""
    for b in prange(out.size):
        acc = 0.0
        for t in range(b * cpb, (b + 1) * cpb):
            p = partial[t]
            if kind != 0:
                acc += p
            elif p > acc or p != p:
                acc = p
        out[b] = _scale_of(acc, kind, qmax, min((b + 1) * block, n) - b * block)


@njit(inline="always")
def _scale_of(norm, kind, qmax, count):
    """A block's scale from its combined max (kind 0), sum of squares (1) or sum of |x| (2)."""
    if kind == 0:
        return np.float32(norm) / np.float32(qmax)
    if kind == 1:
        return np.float32(np.sqrt(norm)) / np.float32(qmax)
    return np.float32(norm / count) / np.float32(qmax)


@njit(inline="always")
def _clamp(c, q):
    """A rounded value clipped to [-q, q]; NaN becomes 0 (the contract)."""
    if c != c:
        return np.float32(0)
    return min(max(c, -q), q)


@njit(inline="always")
def _inverse(s):
    return np.float32(1) / s if s > 0 else np.float32(0)


@njit(inline="always")
def _byte(c):
    return np.uint8(np.int32(c) & 0xFF)


@njit(inline="always")
def _encode_span(xs, inv, q, bits, stochastic, first, os):
    """Codes of ``xs`` (one block, or part of one) into ``os``; 4-bit spans start on an even element."""
    if bits == 8:
        if stochastic:
            for i in range(xs.size):
                os[i] = _byte(_clamp(np.floor(xs[i] * inv + uniform_at(first, i)), q))
        else:
            for i in range(xs.size):
                os[i] = _byte(_clamp(np.rint(xs[i] * inv), q))
        return
    pairs = xs.size >> 1
    if stochastic:
        for j in range(pairs):
            low = np.int32(_clamp(np.floor(xs[2 * j] * inv + uniform_at(first, 2 * j)), q)) & 0xF
            high = np.int32(_clamp(np.floor(xs[2 * j + 1] * inv + uniform_at(first, 2 * j + 1)), q)) & 0xF
            os[j] = np.uint8(low | (high << 4))
    else:
        for j in range(pairs):
            low = np.int32(_clamp(np.rint(xs[2 * j] * inv), q)) & 0xF
            high = np.int32(_clamp(np.rint(xs[2 * j + 1] * inv), q)) & 0xF
            os[j] = np.uint8(low | (high << 4))
    if xs.size & 1:  # an odd tail: the high nibble stays 0
        i = xs.size - 1
        c = np.floor(xs[i] * inv + uniform_at(first, i)) if stochastic else np.rint(xs[i] * inv)
        os[pairs] = np.uint8(np.int32(_clamp(c, q)) & 0xF)


@njit(inline="always")
def _span_out(packed, bits, lo, hi):
    return packed[lo:hi] if bits == 8 else packed[lo >> 1: (hi + 1) >> 1]


@njit(**OPTS)
def _quantize_fused(x, bits, block, kind, q, stochastic, base, packed, scales):
    """One pass per block (blocks up to one chunk): its scale, then its codes, while it is in cache."""
    n = x.size
    per_task = max(1, CHUNK // block)
    for t in prange((scales.size + per_task - 1) // per_task):
        for b in range(t * per_task, min(scales.size, (t + 1) * per_task)):
            lo, hi = b * block, min((b + 1) * block, n)
            xs = x[lo:hi]
            norm = _chunk_max(xs) if kind == 0 else _lane_sum(xs, kind)
            scales[b] = _scale_of(norm, kind, q, hi - lo)
            _encode_span(xs, _inverse(scales[b]), q, bits, stochastic, base + np.uint64(lo),
                         _span_out(packed, bits, lo, hi))


@njit(**OPTS)
def _quantize_tasks(x, bits, block, scales, q, stochastic, base, out):
    """Codes with precomputed scales, parallel over (block, chunk) tasks (for blocks beyond a chunk)."""
    n = x.size
    cpb = (block + CHUNK - 1) // CHUNK
    for t in prange(scales.size * cpb):
        b, lo, hi = _task(t, cpb, block, n)
        _encode_span(x[lo:hi], _inverse(scales[b]), q, bits, stochastic, base + np.uint64(lo),
                     _span_out(out, bits, lo, hi))


@njit(**OPTS)
def _quantize_bytes(x, block, scales, q, stochastic, base, out):
    """The general 4-bit path for odd-sized blocks (a byte may span two blocks): one byte per iteration."""
    n = x.size
    for j in prange(out.size):
        byte = 0
        for k in range(2):
            i = 2 * j + k
            if i < n:
                v = x[i] * _inverse(scales[i // block])
                c = np.floor(v + uniform_at(base, i)) if stochastic else np.rint(v)
                byte |= (np.int32(_clamp(c, q)) & 0xF) << (4 * k)
        out[j] = byte


def _outputs(out, n: int, nbytes: int, block: int):
    """``(packed, scales)`` to write into: the caller's, or new arrays."""
    if out is not None:
        return out
    return np.empty(nbytes, dtype=np.uint8), np.empty((n + block - 1) // block, dtype=np.float32)


@implements("quantize")
def quantize(x: np.ndarray, bits: int, block: int, scale_kind: str, qmax: int, stochastic: bool,
             base: int, out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    packed, scales = _outputs(out, x.size, (x.size * bits + 7) // 8, block)
    q, kind = np.float32(qmax), scale_kind_code(scale_kind)
    if bits == 4 and block % 2:  # a byte can span two blocks
        _scales(x, block, kind, qmax, scales)
        _quantize_bytes(x, block, scales, q, stochastic, np.uint64(base), packed)
    elif block <= CHUNK:
        _quantize_fused(x, bits, block, kind, q, stochastic, np.uint64(base), packed, scales)
    else:
        _scales(x, block, kind, qmax, scales)
        _quantize_tasks(x, bits, block, scales, q, stochastic, np.uint64(base), packed)
    return packed, scales


@njit(**OPTS)
def _dequantize(packed, scales, n, bits, block, out):
    cpb = (block + CHUNK - 1) // CHUNK
    for t in prange(scales.size * cpb):
        b, lo, hi = _task(t, cpb, block, n)
        s = scales[b]
        os = out[lo:hi]
        if bits == 8:
            ps = packed[lo:hi].view(np.int8)
            for i in range(os.size):
                os[i] = np.float32(ps[i]) * s
        else:
            ps = packed[lo >> 1: (hi + 1) >> 1]
            shift = lo & 1  # a block of odd size can start in the high nibble
            for i in range(os.size):
                k = i + shift
                c = (np.int32(ps[k >> 1]) >> ((k & 1) * 4)) & 0xF
                os[i] = np.float32(c - 16 if c >= 8 else c) * s


@implements("dequantize")
def dequantize(packed: np.ndarray, scales: np.ndarray, n: int, bits: int, block: int,
               out: np.ndarray | None = None) -> np.ndarray:
    out = np.empty(n, dtype=np.float32) if out is None else out
    _dequantize(packed, scales, n, bits, block, out)
    return out


@njit(**OPTS)
def _sign_bits(x, out):
    n = x.size
    per_task = CHUNK // 8
    for t in prange((out.size + per_task - 1) // per_task):
        os = out[t * per_task: min(out.size, (t + 1) * per_task)]
        xs = x[8 * t * per_task: min(n, 8 * (t + 1) * per_task)]
        for j in range(os.size):
            byte = 0
            for k in range(min(8, xs.size - 8 * j)):
                byte |= (xs[8 * j + k] < 0) << k
            os[j] = byte


@njit(**OPTS)
def _sign_fused(x, block, packed, scales):
    """Bits and mean-magnitude partial sums in one pass over (block, chunk) tasks; needs every task to
    start on a byte boundary (block a multiple of 8, or a single block)."""
    n = x.size
    cpb = (block + CHUNK - 1) // CHUNK
    partial = np.zeros(scales.size * cpb, dtype=np.float64)
    for t in prange(scales.size * cpb):
        _, lo, hi = _task(t, cpb, block, n)
        xs = x[lo:hi]
        partial[t] = _lane_sum(xs, 2)
        _pack_signs(xs, packed[lo >> 3: (hi + 7) >> 3])
    _finish_scales(partial, cpb, block, n, 2, 1, scales)


@njit(inline="always")
def _pack_signs(xs, os):
    """Bit k of byte j is ``xs[8j+k] < 0``; full bytes unrolled (branch-free), then the tail."""
    full = xs.size >> 3
    for j in range(full):
        g = 8 * j
        os[j] = ((xs[g] < 0) | ((xs[g + 1] < 0) << 1) | ((xs[g + 2] < 0) << 2) | ((xs[g + 3] < 0) << 3)
                 | ((xs[g + 4] < 0) << 4) | ((xs[g + 5] < 0) << 5) | ((xs[g + 6] < 0) << 6)
                 | ((xs[g + 7] < 0) << 7))
    if xs.size & 7:
        byte = 0
        for k in range(xs.size - 8 * full):
            byte |= (xs[8 * full + k] < 0) << k
        os[full] = byte


@implements("sign_pack")
def sign_pack(x: np.ndarray, block: int,
              out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    packed, scales = _outputs(out, x.size, (x.size + 7) // 8, block)
    if block % 8 == 0 or block >= x.size:
        _sign_fused(x, block, packed, scales)
    else:
        _sign_bits(x, packed)
        _scales(x, block, 2, 1, scales)
    return packed, scales


@njit(**OPTS)
def _sign_unpack(packed, scales, n, block, out):
    cpb = (block + CHUNK - 1) // CHUNK
    for t in prange(scales.size * cpb):
        b, lo, hi = _task(t, cpb, block, n)
        s = scales[b]
        os = out[lo:hi]
        ps = packed[lo >> 3: (hi + 7) >> 3]
        shift = lo & 7  # blocks need not start on a byte boundary
        if shift == 0:
            _unpack_signs(ps, s, os)
            continue
        for i in range(os.size):
            k = i + shift
            bit = (ps[k >> 3] >> (k & 7)) & 1
            os[i] = (np.float32(1) - np.float32(2) * np.float32(bit)) * s


@njit(inline="always")
def _unpack_signs(ps, s, os):
    """``(1 - 2 bit) * s`` for a byte-aligned span, eight elements per byte."""
    # +-1 * s; a NaN scale stays bit for bit as x86's multiply leaves it (LLVM would fold -1 * s into a
    # sign flip, which changes a NaN's sign bit)
    plus, minus = s, (-s if s == s else s)
    full = os.size >> 3
    for j in range(full):
        byte = ps[j]
        for k in range(8):
            os[8 * j + k] = minus if (byte >> k) & 1 else plus
    for i in range(8 * full, os.size):
        os[i] = minus if (ps[i >> 3] >> (i & 7)) & 1 else plus


@implements("sign_unpack")
def sign_unpack(packed: np.ndarray, scales: np.ndarray, n: int, block: int,
                out: np.ndarray | None = None) -> np.ndarray:
    out = np.empty(n, dtype=np.float32) if out is None else out
    _sign_unpack(packed, scales, n, block, out)
    return out
