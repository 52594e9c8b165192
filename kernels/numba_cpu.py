"""Numba CPU provider: ``@njit(parallel=True)`` versions of the reference operations.

Same signatures and bitwise-identical results as :mod:`.reference` (the parity tests check).
Floating values are handled through their IEEE bit patterns wherever Numba lacks an operation
(it has no float16 arithmetic) or where bits make the contract exact (ordering by ``|x|``).

Selections (top-k, threshold, nonzero) share one parallel compaction: the array is cut into
chunks, each chunk counts its hits, a prefix sum gives each chunk its output offset, and each
chunk writes its hits in index order, so the output is sorted without a sort. Top-k finds the
k-th largest magnitude by radix selection on the bit keys (16-bit digits, per-thread histograms).
"""

from __future__ import annotations

from . import threads as _threads  # noqa: F401 - sets Numba's thread count and OpenMP wait policy first

# isort: split
import numba
import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from . import reference
from .hashing import GOLDEN, MUL1, MUL2

_GOLDEN, _MUL1, _MUL2 = np.uint64(GOLDEN), np.uint64(MUL1), np.uint64(MUL2)
_UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_OPTS = {"parallel": True, "cache": True, "nogil": True}


@njit(inline="always")
def _mix64(z):
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


_SMALL = 1 << 16


def _chunks(n: int) -> int:
    return max(1, min(n // 65536 + 1, 8 * numba.get_num_threads()))


# ---------------------------------------------------------------- random numbers


@njit(**_OPTS)
def _uniform(base, n):
    out = np.empty(n, dtype=np.float32)
    scale = np.float32(1.0 / (1 << 24))
    for i in prange(n):
        out[i] = np.float32(_mix64(base + np.uint64(i)) >> np.uint64(40)) * scale
    return out


def uniform(base: int, n: int) -> np.ndarray:
    return _uniform(np.uint64(base), n)


@njit(**_OPTS)
def _stratified(base, n, k):
    out = np.empty(k, dtype=np.int64)
    small, extra = n // k, n % k
    for j in prange(k):
        size = small + (1 if j < extra else 0)
        start = j * small + min(j, extra)
        out[j] = start + np.int64(_mix64(base + np.uint64(j)) % np.uint64(size))
    return out


def stratified_indices(base: int, n: int, k: int) -> np.ndarray:
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if k == 0:
        return np.empty(0, dtype=np.int64)
    return _stratified(np.uint64(base), n, k)


# ---------------------------------------------------------------- selection


@njit(**_OPTS)
def _compact(keys, mask, tie_key, tie_quota, nchunks):
    """Indices with ``key > tie_key``, plus the first ``tie_quota`` with ``key == tie_key``, sorted."""
    n = keys.size
    step = (n + nchunks - 1) // nchunks
    above = np.zeros(nchunks, dtype=np.int64)
    ties = np.zeros(nchunks, dtype=np.int64)
    for c in prange(nchunks):
        a, t = 0, 0
        for key in keys[c * step: min(n, (c + 1) * step)]:
            key &= mask
            a += key > tie_key
            t += key == tie_key
        above[c], ties[c] = a, t
    offsets = np.zeros(nchunks, dtype=np.int64)
    quota = np.zeros(nchunks, dtype=np.int64)
    total, left = 0, tie_quota
    for c in range(nchunks):
        quota[c] = min(ties[c], left)
        left -= quota[c]
        offsets[c] = total
        total += above[c] + quota[c]
    out = np.empty(total, dtype=np.int64)
    for c in prange(nchunks):
        pos, q, lo = offsets[c], quota[c], c * step
        chunk = keys[lo: min(n, lo + step)]
        for i in range(chunk.size):
            key = chunk[i] & mask
            if key > tie_key or (key == tie_key and q > 0):
                if key == tie_key:
                    q -= 1
                out[pos] = lo + i
                pos += 1
    return out


@njit(**_OPTS)
def _histogram(keys, mask, shift, digit_mask, prefix, prefix_shift, use_prefix, nchunks):
    """Counts of the 16-bit digit ``(key >> shift) & 0xFFFF``, over the keys whose bits above that
    digit equal ``prefix`` (all keys for the top digit)."""
    n = keys.size
    step = (n + nchunks - 1) // nchunks
    partial = np.zeros((nchunks, 65536), dtype=np.int64)
    for c in prange(nchunks):
        counts = partial[c]
        for key in keys[c * step: min(n, (c + 1) * step)]:
            key &= mask
            if not use_prefix or (key >> prefix_shift) == prefix:
                counts[np.int64((key >> shift) & digit_mask)] += 1
    return partial.sum(axis=0)


def _kth_largest_key(keys: np.ndarray, mask, k: int, nchunks: int):
    """The k-th largest masked key: radix selection, 16 bits at a time, highest digit first."""
    utype = keys.dtype.type
    bits = keys.dtype.itemsize * 8
    prefix, rank = 0, k  # we want the rank-th largest of the keys that start with prefix
    for shift in range(bits - 16, -1, -16):
        use_prefix = shift + 16 < bits
        hist = _histogram(keys, mask, utype(shift), utype(0xFFFF), utype(prefix),
                          utype(shift + 16 if use_prefix else 0), use_prefix, nchunks)
        at_least = np.cumsum(hist[::-1])  # at_least[j]: keys whose digit is >= 65535 - j
        j = int(np.searchsorted(at_least, rank))
        rank -= int(at_least[j - 1]) if j else 0
        prefix = (prefix << 16) | (65535 - j)
    return utype(prefix)


def _keys(x: np.ndarray):
    utype = _UNSIGNED[x.dtype.itemsize]
    mask = utype((1 << (8 * x.dtype.itemsize - 1)) - 1)
    return np.ascontiguousarray(x).view(utype), mask


def topk(x: np.ndarray, k: int) -> np.ndarray:
    n = x.size
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if n < _SMALL:  # 65536-bin histograms cost more than a partition on small arrays
        return reference.topk(x, k)
    keys, mask = _keys(x)
    nchunks = _chunks(n)
    kth = _kth_largest_key(keys, mask, k, nchunks)
    above = _count_above(keys, mask, kth, nchunks)
    return _compact(keys, mask, kth, k - above, nchunks)


@njit(**_OPTS)
def _count_above(keys, mask, kth, nchunks):
    n = keys.size
    step = (n + nchunks - 1) // nchunks
    counts = np.zeros(nchunks, dtype=np.int64)
    for c in prange(nchunks):
        a = 0
        for key in keys[c * step: min(n, (c + 1) * step)]:
            a += (key & mask) > kth
        counts[c] = a
    return counts.sum()


def threshold(x: np.ndarray, tau: float) -> np.ndarray:
    keys, mask = _keys(x)
    tau_key = reference.abs_key(np.array([tau], dtype=x.dtype))[0]
    if tau_key == 0:  # everything qualifies: ">= 0" is "> -1", which unsigned keys cannot express
        return np.arange(x.size, dtype=np.int64)
    return _compact(keys, mask, keys.dtype.type(tau_key - 1), 0, _chunks(x.size))


def nonzero(x: np.ndarray) -> np.ndarray:
    keys, mask = _keys(x)
    return _compact(keys, mask, keys.dtype.type(0), 0, _chunks(x.size))


@njit(**_OPTS)
def _scatter_add(dense, idx, vals):
    for i in prange(idx.size):
        dense[idx[i]] += vals[i]


def scatter_add(dense: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> None:
    if dense.dtype == np.float16:  # Numba has no float16 arithmetic: the reference does it
        reference.scatter_add(dense, idx, vals)
        return
    _scatter_add(dense, np.ascontiguousarray(idx, dtype=np.int64), vals.astype(dense.dtype, copy=False))


# ---------------------------------------------------------------- quantization


_CHUNK = reference.REDUCE_CHUNK  # even, so chunks never split a packed byte of an even-sized block


@njit(inline="always")
def _task(t, cpb, block, n):
    """Element range ``[lo, hi)`` and block of task ``t``: chunk ``t % cpb`` of block ``t // cpb``."""
    b = t // cpb
    lo = b * block + (t - b * cpb) * _CHUNK
    return b, lo, min(lo + _CHUNK, min((b + 1) * block, n))


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


@njit(**_OPTS)
def _scales(x, block, kind, qmax, out):
    """Per block: kind 0 max|x|, 1 L2 norm, 2 mean|x|, divided by qmax, in the reference's order."""
    n = x.size
    cpb = (block + _CHUNK - 1) // _CHUNK
    partial = np.zeros(out.size * cpb, dtype=np.float64)
    for t in prange(out.size * cpb):
        _, lo, hi = _task(t, cpb, block, n)
        if lo < hi:
            partial[t] = _chunk_max(x[lo:hi]) if kind == 0 else _lane_sum(x[lo:hi], kind)
    _finish_scales(partial, cpb, block, n, kind, qmax, out)


@njit(**_OPTS)
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
def _uniform_at(base, i):
    return np.float32(_mix64(base + np.uint64(i)) >> np.uint64(40)) * np.float32(1.0 / (1 << 24))


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
                os[i] = _byte(_clamp(np.floor(xs[i] * inv + _uniform_at(first, i)), q))
        else:
            for i in range(xs.size):
                os[i] = _byte(_clamp(np.rint(xs[i] * inv), q))
        return
    pairs = xs.size >> 1
    if stochastic:
        for j in range(pairs):
            low = np.int32(_clamp(np.floor(xs[2 * j] * inv + _uniform_at(first, 2 * j)), q)) & 0xF
            high = np.int32(_clamp(np.floor(xs[2 * j + 1] * inv + _uniform_at(first, 2 * j + 1)), q)) & 0xF
            os[j] = np.uint8(low | (high << 4))
    else:
        for j in range(pairs):
            low = np.int32(_clamp(np.rint(xs[2 * j] * inv), q)) & 0xF
            high = np.int32(_clamp(np.rint(xs[2 * j + 1] * inv), q)) & 0xF
            os[j] = np.uint8(low | (high << 4))
    if xs.size & 1:  # an odd tail: the high nibble stays 0
        i = xs.size - 1
        c = np.floor(xs[i] * inv + _uniform_at(first, i)) if stochastic else np.rint(xs[i] * inv)
        os[pairs] = np.uint8(np.int32(_clamp(c, q)) & 0xF)


@njit(inline="always")
def _span_out(packed, bits, lo, hi):
    return packed[lo:hi] if bits == 8 else packed[lo >> 1: (hi + 1) >> 1]


@njit(**_OPTS)
def _quantize_fused(x, bits, block, kind, q, stochastic, base, packed, scales):
    """One pass per block (blocks up to one chunk): its scale, then its codes, while it is in cache."""
    n = x.size
    per_task = max(1, _CHUNK // block)
    for t in prange((scales.size + per_task - 1) // per_task):
        for b in range(t * per_task, min(scales.size, (t + 1) * per_task)):
            lo, hi = b * block, min((b + 1) * block, n)
            xs = x[lo:hi]
            norm = _chunk_max(xs) if kind == 0 else _lane_sum(xs, kind)
            scales[b] = _scale_of(norm, kind, q, hi - lo)
            _encode_span(xs, _inverse(scales[b]), q, bits, stochastic, base + np.uint64(lo),
                         _span_out(packed, bits, lo, hi))


@njit(**_OPTS)
def _quantize_tasks(x, bits, block, scales, q, stochastic, base, out):
    """Codes with precomputed scales, parallel over (block, chunk) tasks (for blocks beyond a chunk)."""
    n = x.size
    cpb = (block + _CHUNK - 1) // _CHUNK
    for t in prange(scales.size * cpb):
        b, lo, hi = _task(t, cpb, block, n)
        _encode_span(x[lo:hi], _inverse(scales[b]), q, bits, stochastic, base + np.uint64(lo),
                     _span_out(out, bits, lo, hi))


@njit(**_OPTS)
def _quantize_bytes(x, block, scales, q, stochastic, base, out):
    """The general 4-bit path for odd-sized blocks (a byte may span two blocks): one byte per iteration."""
    n = x.size
    for j in prange(out.size):
        byte = 0
        for k in range(2):
            i = 2 * j + k
            if i < n:
                v = x[i] * _inverse(scales[i // block])
                c = np.floor(v + _uniform_at(base, i)) if stochastic else np.rint(v)
                byte |= (np.int32(_clamp(c, q)) & 0xF) << (4 * k)
        out[j] = byte


_KINDS = {"max": 0, "l2": 1, "mean": 2}


def _outputs(out, n: int, nbytes: int, block: int):
    """``(packed, scales)`` to write into: the caller's, or new arrays."""
    if out is not None:
        return out
    return np.empty(nbytes, dtype=np.uint8), np.empty((n + block - 1) // block, dtype=np.float32)


def quantize(x: np.ndarray, bits: int, block: int, scale_kind: str, qmax: int, stochastic: bool,
             base: int, out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    packed, scales = _outputs(out, x.size, (x.size * bits + 7) // 8, block)
    q, kind = np.float32(qmax), _KINDS[scale_kind]
    if bits == 4 and block % 2:  # a byte can span two blocks
        _scales(x, block, kind, qmax, scales)
        _quantize_bytes(x, block, scales, q, stochastic, np.uint64(base), packed)
    elif block <= _CHUNK:
        _quantize_fused(x, bits, block, kind, q, stochastic, np.uint64(base), packed, scales)
    else:
        _scales(x, block, kind, qmax, scales)
        _quantize_tasks(x, bits, block, scales, q, stochastic, np.uint64(base), packed)
    return packed, scales


@njit(**_OPTS)
def _dequantize(packed, scales, n, bits, block, out):
    cpb = (block + _CHUNK - 1) // _CHUNK
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


def dequantize(packed: np.ndarray, scales: np.ndarray, n: int, bits: int, block: int,
               out: np.ndarray | None = None) -> np.ndarray:
    out = np.empty(n, dtype=np.float32) if out is None else out
    _dequantize(packed, scales, n, bits, block, out)
    return out


@njit(**_OPTS)
def _sign_bits(x, out):
    n = x.size
    per_task = _CHUNK // 8
    for t in prange((out.size + per_task - 1) // per_task):
        os = out[t * per_task: min(out.size, (t + 1) * per_task)]
        xs = x[8 * t * per_task: min(n, 8 * (t + 1) * per_task)]
        for j in range(os.size):
            byte = 0
            for k in range(min(8, xs.size - 8 * j)):
                byte |= (xs[8 * j + k] < 0) << k
            os[j] = byte


@njit(**_OPTS)
def _sign_fused(x, block, packed, scales):
    """Bits and mean-magnitude partial sums in one pass over (block, chunk) tasks; needs every task to
    start on a byte boundary (block a multiple of 8, or a single block)."""
    n = x.size
    cpb = (block + _CHUNK - 1) // _CHUNK
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


@njit(**_OPTS)
def _sign_unpack(packed, scales, n, block, out):
    cpb = (block + _CHUNK - 1) // _CHUNK
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


def sign_unpack(packed: np.ndarray, scales: np.ndarray, n: int, block: int,
                out: np.ndarray | None = None) -> np.ndarray:
    out = np.empty(n, dtype=np.float32) if out is None else out
    _sign_unpack(packed, scales, n, block, out)
    return out


# ---------------------------------------------------------------- 16-bit floats


@njit(**_OPTS)
def _fp16_encode(bits, out):
    for i in prange(bits.size):
        f = np.uint32(bits[i])
        sign = np.uint32((f >> np.uint32(16)) & np.uint32(0x8000))
        f = f & np.uint32(0x7FFFFFFF)
        exp = f & np.uint32(0x7F800000)
        if exp >= np.uint32(0x47800000):  # inf, nan, or too large
            if f > np.uint32(0x7F800000):
                out[i] = sign | np.uint32(0x7E00)
            else:
                out[i] = sign | np.uint32(0x7C00)
        elif exp <= np.uint32(0x38000000):  # half subnormal or underflow to zero
            if exp < np.uint32(0x33000000):
                out[i] = sign
            else:
                e = exp >> np.uint32(23)
                sig = np.uint32(0x00800000) + (f & np.uint32(0x007FFFFF))
                sig = sig >> (np.uint32(113) - e)
                if (sig & np.uint32(0x3FFF)) != np.uint32(0x1000) or (f & np.uint32(0x7FF)) != 0:
                    sig += np.uint32(0x1000)
                out[i] = sign + (sig >> np.uint32(13))
        else:  # normal: round to nearest even; a carry into the exponent is correct (up to inf)
            hexp = (exp - np.uint32(0x38000000)) >> np.uint32(13)
            sig = f & np.uint32(0x007FFFFF)
            if (sig & np.uint32(0x3FFF)) != np.uint32(0x1000):
                sig += np.uint32(0x1000)
            out[i] = sign + ((sig >> np.uint32(13)) + hexp)


def _out(out, n: int, dtype):
    return np.empty(n, dtype=dtype) if out is None else out


@intrinsic
def _f32_to_f16_bits(typingctx, value):
    """LLVM ``fptrunc float -> half``: one F16C instruction (vcvtps2ph), IEEE round to nearest even."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


@intrinsic
def _f16_bits_to_f32(typingctx, bits):
    """LLVM ``fpext half -> float`` (vcvtph2ps): exact."""
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@njit(**_OPTS)
def _fp16_encode_f16c(x, out):
    for i in prange(x.size):
        h = _f32_to_f16_bits(x[i])
        if x[i] != x[i]:  # the contract's canonical NaN, sign kept
            h = np.uint16((h & 0x8000) | 0x7E00)
        out[i] = h


@intrinsic
def _u32_as_f32(typingctx, bits):
    """Reinterpret 32 bits as a float32."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


@njit(**_OPTS)
def _fp16_decode_f16c(h, out):
    for i in prange(h.size):
        v = np.uint32(h[i])
        if (v & np.uint32(0x7FFF)) > np.uint32(0x7C00):  # NaN: keep its payload (the hardware would quiet it)
            out[i] = _u32_as_f32(((v & np.uint32(0x8000)) << np.uint32(16)) | np.uint32(0x7F800000)
                                 | ((v & np.uint32(0x3FF)) << np.uint32(13)))
        else:
            out[i] = _f16_bits_to_f32(h[i])


# The hardware conversions need the CPU's F16C extension; without it LLVM would call a soft-float
# routine Numba cannot link, so fall back to the bit-level conversion and the lookup table.
_F16C = "+f16c" in llvm_binding.get_host_cpu_features().flatten().split(",")


def fp16_encode(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = _out(out, x.size, np.uint16)
    if _F16C:
        _fp16_encode_f16c(x, out)
    else:
        _fp16_encode(x.view(np.uint32), out)
    return out


_HALF_TO_FLOAT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)  # exact, 256 KiB


@njit(**_OPTS)
def _lookup(h, table, out):
    for i in prange(h.size):
        out[i] = table[h[i]]


def fp16_decode(h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    out = _out(out, h.size, np.float32)
    if _F16C:
        _fp16_decode_f16c(np.ascontiguousarray(h), out)
    else:
        _lookup(np.ascontiguousarray(h), _HALF_TO_FLOAT, out)
    return out


@njit(**_OPTS)
def _bf16_encode(bits, out):
    for i in prange(bits.size):
        b = bits[i]
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            out[i] = (b >> np.uint32(16)) | np.uint32(0x0040)
        else:
            out[i] = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)


def bf16_encode(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    out = _out(out, bits.size, np.uint16)
    _bf16_encode(bits, out)
    return out


@njit(**_OPTS)
def _bf16_decode(h, out):
    for i in prange(h.size):
        out[i] = np.uint32(h[i]) << np.uint32(16)


def bf16_decode(h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    out = _out(out, h.size, np.float32)
    _bf16_decode(np.ascontiguousarray(h), out.view(np.uint32))
    return out


# ---------------------------------------------------------------- CSR


@njit(**_OPTS)
def _csr_build(bits, mask):
    rows, cols = bits.shape
    counts = np.zeros(rows, dtype=np.int64)
    for r in prange(rows):
        c = 0
        for j in range(cols):
            if bits[r, j] & mask:
                c += 1
        counts[r] = c
    indptr = np.zeros(rows + 1, dtype=np.int64)
    for r in range(rows):
        indptr[r + 1] = indptr[r] + counts[r]
    indices = np.empty(indptr[rows], dtype=np.int64)
    values = np.empty(indptr[rows], dtype=bits.dtype)
    for r in prange(rows):
        pos = indptr[r]
        for j in range(cols):
            if bits[r, j] & mask:
                indices[pos] = j
                values[pos] = bits[r, j]
                pos += 1
    return indptr, indices, values


def csr_build(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys, mask = _keys(np.ascontiguousarray(mat))
    indptr, indices, values = _csr_build(keys, mask)
    return indptr, indices, values.view(mat.dtype)


@njit(**_OPTS)
def _csr_densify(indptr, indices, values, out):
    for r in prange(out.shape[0]):
        for p in range(indptr[r], indptr[r + 1]):
            out[r, indices[p]] = values[p]


def csr_densify(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, shape: tuple[int, int],
                dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    utype = _UNSIGNED[dtype.itemsize]
    out = np.zeros(shape, dtype=utype)
    _csr_densify(np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(indices, dtype=np.int64),
                 np.ascontiguousarray(values).view(utype), out)
    return out.view(dtype)


# ---------------------------------------------------------------- low rank (PowerSGD)


@njit(**_OPTS)
def _lowrank(p, qt, size, out):
    n, r = p.shape
    m = qt.shape[1]
    for i in prange(n):
        lo = i * m
        width = min(m, size - lo)
        if width <= 0:
            continue
        row = out[lo: lo + width]
        if r == 0:
            row[:] = 0
            continue
        first = p[i, 0]
        for j in range(width):
            row[j] = first * qt[0, j]
        for k in range(1, r):  # the products of column k, each rounded, added in k order
            pk = p[i, k]
            for j in range(width):
                row[j] = row[j] + pk * qt[k, j]


def lowrank_reconstruct(p: np.ndarray, q: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """See :func:`reference.lowrank_reconstruct`: rows in parallel, each row built ``r`` times in
    cache with SIMD over the columns (``q`` transposed so that a row of ``q.T`` is contiguous)."""
    reference.lowrank_shape(p, q, size)  # refuses factors that cannot give size elements
    direct = out is not None and out.dtype == np.float32 and out.shape == (size,) and out.flags.c_contiguous
    result = out if direct else np.empty(size, np.float32)
    _lowrank(np.ascontiguousarray(p, dtype=np.float32), np.ascontiguousarray(q.T, dtype=np.float32),
             size, result)
    return result if direct else reference._into(result, out)


OPS = {
    "uniform": uniform,
    "stratified_indices": stratified_indices,
    "topk": topk,
    "threshold": threshold,
    "nonzero": nonzero,
    "scatter_add": scatter_add,
    "quantize": quantize,
    "dequantize": dequantize,
    "sign_pack": sign_pack,
    "sign_unpack": sign_unpack,
    "fp16_encode": fp16_encode,
    "fp16_decode": fp16_decode,
    "bf16_encode": bf16_encode,
    "bf16_decode": bf16_decode,
    "csr_build": csr_build,
    "csr_densify": csr_densify,
    "lowrank_reconstruct": lowrank_reconstruct,
}
