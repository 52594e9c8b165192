"""Top-k, threshold and nonzero: one compaction without sorts or ``syncthreads``.

Each thread owns a slice of ``ITEMS`` consecutive elements, a first kernel counts each slice's
hits, a prefix sum (on the array's own device) gives each slice its output offset, and a second
kernel writes the hits of each slice in index order. Top-k finds the k-th largest key by radix
selection, 16 bits at a time, on a global histogram built with ``cuda.atomic.add`` (runs of equal
digits are added at once, so heavy ties do not serialize on one counter).
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ...backend import to_host, xp_of
from .. import reference
from ..ops import implements
from .common import Array, float_keys, launch, lesser

# ---------------------------------------------------------------- selection

_ITEMS = 16  # elements per thread slice in the selection kernels
_DIGIT = np.uint16(0xFFFF)


@cuda.jit
def _radix_histogram_kernel(keys, mask, shift, high, prefix, hist):
    """Counts of the 16-bit digit at ``shift`` of the masked keys whose bits above that digit
    (``high``) equal ``prefix``; a run of equal digits within a slice is one atomic add."""
    n = keys.size
    for s in range(cuda.grid(1), (n + _ITEMS - 1) // _ITEMS, cuda.gridsize(1)):
        digit = -1
        run = 0
        for i in range(s * _ITEMS, lesser(n, (s + 1) * _ITEMS)):
            key = keys[i] & mask
            if (key & high) == prefix:
                d = np.int64((key >> shift) & _DIGIT)
                if d != digit:
                    if run > 0:
                        cuda.atomic.add(hist, digit, run)
                    digit = d
                    run = 0
                run += 1
        if run > 0:
            cuda.atomic.add(hist, digit, run)


@cuda.jit
def _select_count_kernel(keys, mask, lo, tie, above, ties):
    """Per slice: how many masked keys are ``>= lo``, and how many of the others equal ``tie``."""
    n = keys.size
    for s in range(cuda.grid(1), above.size, cuda.gridsize(1)):
        a = 0
        t = 0
        for i in range(s * _ITEMS, lesser(n, (s + 1) * _ITEMS)):
            key = keys[i] & mask
            if key >= lo:
                a += 1
            elif key == tie:
                t += 1
        above[s] = a
        ties[s] = t


@cuda.jit
def _select_write_kernel(keys, mask, lo, tie, offsets, take, out):
    """Per slice, in index order from its offset: the keys ``>= lo`` and its first ``take`` ties."""
    n = keys.size
    for s in range(cuda.grid(1), offsets.size, cuda.gridsize(1)):
        pos = offsets[s]
        quota = take[s]
        for i in range(s * _ITEMS, lesser(n, (s + 1) * _ITEMS)):
            key = keys[i] & mask
            hit = key >= lo
            if not hit and key == tie and quota > 0:
                quota -= 1
                hit = True
            if hit:
                out[pos] = i
                pos += 1


def select_keys(keys: Array, mask: int, lo: int, tie: int, quota: int) -> Array:
    """Sorted int64 indices of the masked keys ``>= lo``, plus the first ``quota`` equal to ``tie``."""
    xp, utype = xp_of(keys), keys.dtype.type
    slices = -(-keys.size // _ITEMS)
    if slices == 0:
        return xp.empty(0, dtype=np.int64)
    bounds = (utype(mask), utype(lo), utype(tie))
    above, ties = xp.empty(slices, dtype=np.int32), xp.empty(slices, dtype=np.int32)
    launch(_select_count_kernel, slices, keys, *bounds, above, ties)
    ties = ties.astype(np.int64)
    take = xp.clip(quota - (xp.cumsum(ties) - ties), 0, ties)  # the first `quota` ties in index order
    chosen = above + take
    ends = xp.cumsum(chosen)
    total = int(to_host(ends[-1:])[0])  # synchronize!
    out = xp.empty(total, dtype=np.int64)
    if total:
        launch(_select_write_kernel, slices, keys, *bounds, ends - chosen, take, out)
    return out


def _radix_select(keys: Array, mask: int, k: int) -> tuple[int, int, int]:
    """``(lo, tie, quota)`` for :func:`select_keys` to pick the ``k`` largest masked keys (ties to the
    lower index): radix selection of the k-th largest key, 16 bits at a time, highest digit first."""
    xp, utype = xp_of(keys), keys.dtype.type
    bits = 8 * keys.dtype.itemsize
    rank, prefix = k, 0  # we want the rank-th largest of the keys that start with prefix
    for shift in range(bits - 16, -1, -16):
        high = ((1 << bits) - 1) & ~((1 << (shift + 16)) - 1)
        hist = xp.zeros(1 << 16, dtype=np.int64)
        launch(_radix_histogram_kernel, -(-keys.size // _ITEMS), keys, utype(mask), utype(shift), utype(high),
               utype(prefix), hist)
        counts = to_host(hist)  # synchronize!
        at_least = np.cumsum(counts[::-1])  # at_least[j]: keys whose digit is >= 65535 - j
        j = int(np.searchsorted(at_least, rank))
        rank -= int(at_least[j - 1]) if j else 0
        digit = 0xFFFF - j
        prefix |= digit << shift
        if int(counts[digit]) == rank:  # the whole bucket is taken: every key >= its smallest one
            return prefix, prefix, 0
    return prefix + 1, prefix, rank


@implements("topk")
def topk(x: Array, k: int) -> Array:
    """Indices of the ``k`` largest ``|x|``, sorted; among equal magnitudes the lower index wins.

    Args:
        x: 1-D float16/32/64 array; NaN ranks above inf.
        k: how many (``0 <= k <= x.size``).

    Returns:
        int64 indices, ascending, of ``x``'s array type.
    """
    keys, mask = float_keys(x)
    if k == 0:
        return xp_of(x).empty(0, dtype=np.int64)
    lo, tie, quota = _radix_select(keys, mask, k)
    return select_keys(keys, mask, lo, tie, quota)


@implements("threshold")
def threshold(x: Array, tau: float) -> Array:
    """Indices with ``|x| >= tau`` (``tau`` rounded to ``x``'s dtype; NaN counts as largest), sorted.

    Args:
        x: 1-D float16/32/64 array.
        tau: the threshold.

    Returns:
        int64 indices, ascending, of ``x``'s array type.
    """
    keys, mask = float_keys(x)
    tau_key = int(reference.abs_key(np.array([tau], dtype=x.dtype))[0])
    return select_keys(keys, mask, tau_key, 0, 0)


@implements("nonzero")
def nonzero(x: Array) -> Array:
    """Indices of elements that are not zero (NaN included, -0.0 excluded), sorted.

    Args:
        x: 1-D float16/32/64 array.

    Returns:
        int64 indices, ascending, of ``x``'s array type.
    """
    keys, mask = float_keys(x)
    return select_keys(keys, mask, 1, 0, 0)
