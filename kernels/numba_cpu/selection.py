"""Top-k, threshold and nonzero: one parallel, order-preserving compaction.

The array is cut into chunks, each chunk counts its hits, a prefix sum gives each chunk its output
offset, and each chunk writes its hits in index order, so the output is sorted without a sort.
Top-k finds the k-th largest magnitude by radix selection on the bit keys (16-bit digits,
per-thread histograms).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import reference
from ..ops import implements
from .common import OPTS, SMALL, bit_keys, chunks


@njit(**OPTS)
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


@njit(**OPTS)
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


@implements("topk")
def topk(x: np.ndarray, k: int) -> np.ndarray:
    n = x.size
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if n < SMALL:  # 65536-bin histograms cost more than a partition on small arrays
        return reference.topk(x, k)
    keys, mask = bit_keys(x)
    nchunks = chunks(n)
    kth = _kth_largest_key(keys, mask, k, nchunks)
    above = _count_above(keys, mask, kth, nchunks)
    return _compact(keys, mask, kth, k - above, nchunks)


@njit(**OPTS)
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


@implements("threshold")
def threshold(x: np.ndarray, tau: float) -> np.ndarray:
    keys, mask = bit_keys(x)
    tau_key = reference.abs_key(np.array([tau], dtype=x.dtype))[0]
    if tau_key == 0:  # everything qualifies: ">= 0" is "> -1", which unsigned keys cannot express
        return np.arange(x.size, dtype=np.int64)
    return _compact(keys, mask, keys.dtype.type(tau_key - 1), 0, chunks(x.size))


@implements("nonzero")
def nonzero(x: np.ndarray) -> np.ndarray:
    keys, mask = bit_keys(x)
    return _compact(keys, mask, keys.dtype.type(0), 0, chunks(x.size))
