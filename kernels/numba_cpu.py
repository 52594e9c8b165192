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

import numba
import numpy as np
from numba import njit, prange

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
        for i in range(c * step, min(n, (c + 1) * step)):
            key = keys[i] & mask
            if key > tie_key:
                a += 1
            elif key == tie_key:
                t += 1
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
        pos, q = offsets[c], quota[c]
        for i in range(c * step, min(n, (c + 1) * step)):
            key = keys[i] & mask
            if key > tie_key or (key == tie_key and q > 0):
                if key == tie_key:
                    q -= 1
                out[pos] = i
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
        for i in range(c * step, min(n, (c + 1) * step)):
            key = keys[i] & mask
            if not use_prefix or (key >> prefix_shift) == prefix:
                partial[c, np.int64((key >> shift) & digit_mask)] += 1
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
        for i in range(c * step, min(n, (c + 1) * step)):
            if (keys[i] & mask) > kth:
                a += 1
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


@njit(**_OPTS)
def _scales(x, block, kind, qmax):
    """kind 0: max|x|, 1: L2 (float64, sequential), 2: mean|x| (float64, sequential); divided by qmax."""
    n = x.size
    nblocks = (n + block - 1) // block
    out = np.empty(nblocks, dtype=np.float32)
    for b in prange(nblocks):
        lo, hi = b * block, min(n, (b + 1) * block)
        if kind == 0:
            m = np.float32(0)
            for i in range(lo, hi):
                a = abs(x[i])
                if a > m or a != a:
                    m = a
                    if a != a:
                        break
            out[b] = m / np.float32(qmax)
        elif kind == 1:
            s = 0.0
            for i in range(lo, hi):
                s += np.float64(x[i]) * np.float64(x[i])
            out[b] = np.float32(np.sqrt(s)) / np.float32(qmax)
        else:
            s = 0.0
            for i in range(lo, hi):
                s += abs(np.float64(x[i]))
            out[b] = np.float32(s / (hi - lo)) / np.float32(qmax)
    return out


@njit(inline="always")
def _code(x, inv, qmax, stochastic, base, i):
    v = x * inv
    if stochastic:
        u = np.float32(_mix64(base + np.uint64(i)) >> np.uint64(40)) * np.float32(1.0 / (1 << 24))
        c = np.floor(v + u)
    else:
        c = np.rint(v)
    if c != c:
        return np.int8(0)
    return np.int8(max(-qmax, min(qmax, c)))


@njit(**_OPTS)
def _quantize(x, bits, block, scales, qmax, stochastic, base):
    n = x.size
    per_byte = 8 // bits
    nbytes = (n * bits + 7) // 8
    out = np.empty(nbytes, dtype=np.uint8)
    for j in prange(nbytes):
        byte = 0
        for t in range(per_byte):
            i = j * per_byte + t
            if i < n:
                s = scales[i // block]
                inv = np.float32(1) / s if s > 0 else np.float32(0)
                c = _code(x[i], inv, qmax, stochastic, base, i)
                byte |= (np.int64(c) & ((1 << bits) - 1)) << (t * bits)
        out[j] = byte
    return out


_KINDS = {"max": 0, "l2": 1, "mean": 2}


def quantize(x: np.ndarray, bits: int, block: int, scale_kind: str, qmax: int, stochastic: bool,
             base: int) -> tuple[np.ndarray, np.ndarray]:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    scales = _scales(x, block, _KINDS[scale_kind], qmax)
    return _quantize(x, bits, block, scales, qmax, stochastic, np.uint64(base)), scales


@njit(**_OPTS)
def _dequantize(packed, scales, n, bits, block):
    out = np.empty(n, dtype=np.float32)
    per_byte = 8 // bits
    for i in prange(n):
        byte = np.int64(packed[i // per_byte])
        c = (byte >> ((i % per_byte) * bits)) & ((1 << bits) - 1)
        if c >= 1 << (bits - 1):
            c -= 1 << bits
        out[i] = np.float32(c) * scales[i // block]
    return out


def dequantize(packed: np.ndarray, scales: np.ndarray, n: int, bits: int, block: int) -> np.ndarray:
    return _dequantize(packed, scales, n, bits, block)


@njit(**_OPTS)
def _sign_bits(x):
    n = x.size
    out = np.empty((n + 7) // 8, dtype=np.uint8)
    for j in prange(out.size):
        byte = 0
        for t in range(8):
            i = 8 * j + t
            if i < n and x[i] < 0:
                byte |= 1 << t
        out[j] = byte
    return out


def sign_pack(x: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return _sign_bits(x), _scales(x, block, 2, 1)


@njit(**_OPTS)
def _sign_unpack(packed, scales, n, block):
    out = np.empty(n, dtype=np.float32)
    for i in prange(n):
        bit = (packed[i >> 3] >> (i & 7)) & 1
        out[i] = (np.float32(1) - np.float32(2) * np.float32(bit)) * scales[i // block]
    return out


def sign_unpack(packed: np.ndarray, scales: np.ndarray, n: int, block: int) -> np.ndarray:
    return _sign_unpack(packed, scales, n, block)


# ---------------------------------------------------------------- 16-bit floats


@njit(**_OPTS)
def _fp16_encode(bits):
    out = np.empty(bits.size, dtype=np.uint16)
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
    return out


def fp16_encode(x: np.ndarray) -> np.ndarray:
    return _fp16_encode(np.ascontiguousarray(x, dtype=np.float32).view(np.uint32))


_HALF_TO_FLOAT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)  # exact, 256 KiB


@njit(**_OPTS)
def _lookup(h, table):
    out = np.empty(h.size, dtype=np.float32)
    for i in prange(h.size):
        out[i] = table[h[i]]
    return out


def fp16_decode(h: np.ndarray) -> np.ndarray:
    return _lookup(np.ascontiguousarray(h), _HALF_TO_FLOAT)


@njit(**_OPTS)
def _bf16_encode(bits):
    out = np.empty(bits.size, dtype=np.uint16)
    for i in prange(bits.size):
        b = bits[i]
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
            out[i] = (b >> np.uint32(16)) | np.uint32(0x0040)
        else:
            out[i] = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return out


def bf16_encode(x: np.ndarray) -> np.ndarray:
    return _bf16_encode(np.ascontiguousarray(x, dtype=np.float32).view(np.uint32))


@njit(**_OPTS)
def _bf16_decode(h):
    out = np.empty(h.size, dtype=np.uint32)
    for i in prange(h.size):
        out[i] = np.uint32(h[i]) << np.uint32(16)
    return out


def bf16_decode(h: np.ndarray) -> np.ndarray:
    return _bf16_decode(np.ascontiguousarray(h)).view(np.float32)


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
}
