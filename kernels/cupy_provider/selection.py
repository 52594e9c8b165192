"""Top-k, threshold and nonzero (select.cu): radix selection and an order-preserving compaction.

Chunks are compacted in index order, never sorted; the output size is read back (one host
synchronization) only where it depends on the data.
"""

from __future__ import annotations

import cupy
import numpy as np

from .. import reference
from ..ops import implements
from .common import THREADS, float_keys, get_kernel, launch

_CHUNK = 8192  # elements per block in the compaction
_DIGIT_BITS, _DIGITS = 8, 256  # radix digit of select.cu (MPICOLL_DIGIT_BITS, MPICOLL_DIGITS)

_RADIX_HIST = {2: "mpicoll_radix_hist_u16", 4: "mpicoll_radix_hist_u32", 8: "mpicoll_radix_hist_u64"}
_COMPACT_COUNT = {2: "mpicoll_compact_count_u16", 4: "mpicoll_compact_count_u32", 8: "mpicoll_compact_count_u64"}
_COMPACT_WRITE = {2: "mpicoll_compact_write_u16", 4: "mpicoll_compact_write_u32", 8: "mpicoll_compact_write_u64"}


def _state(pivot: int, quota: int) -> cupy.ndarray:
    """The device state of a selection: [pivot key, ties to keep] (select.cu)."""
    return cupy.asarray(np.array([pivot, quota], dtype=np.uint64))


def _radix_select(keys: cupy.ndarray, mask: np.uint64, state: cupy.ndarray) -> None:
    """Turn ``state = [0, k]`` into [k-th largest masked key, how many keys equal to it the top k keep].

    One histogram and one single-thread pick per 8-bit digit, most significant first; the
    prefix and rank stay on the device, so the passes queue without a host round trip.
    """
    width = 8 * keys.dtype.itemsize
    shifts = range(width - _DIGIT_BITS, -1, -_DIGIT_BITS)
    hist = cupy.zeros((len(shifts), _DIGITS), dtype=cupy.uint64)
    for row, shift in zip(hist, shifts, strict=True):
        launch("select.cu", _RADIX_HIST[keys.dtype.itemsize], keys.size,
               keys, np.int64(keys.size), mask, state, np.int32(shift), row)
        get_kernel("select.cu", "mpicoll_radix_pick")((1,), (1,), (row, state))


def _compact(keys: cupy.ndarray, mask: np.uint64, state: cupy.ndarray, total: int | None = None) -> cupy.ndarray:
    """Sorted int64 indices whose masked key is above ``state[0]``, plus the first ``state[1]`` equal to it.

    Args:
        keys, mask: from :func:`float_keys`.
        state: the device [pivot, ties to keep].
        total: the output size if the caller knows it; otherwise it is read back (one sync).
    """
    n, size = keys.size, keys.dtype.itemsize
    if n == 0:
        return cupy.empty(0, dtype=cupy.int64)
    nchunks = -(-n // _CHUNK)
    above = cupy.empty(nchunks, dtype=cupy.int64)
    ties = cupy.empty(nchunks, dtype=cupy.int64)
    args = (keys, np.int64(n), mask, state, np.int64(_CHUNK))
    get_kernel("select.cu", _COMPACT_COUNT[size])((nchunks,), (THREADS,), (*args, above, ties))
    # Integer prefix sums, exact in any order: the ties each chunk keeps (the lowest indices
    # first), then where each chunk starts writing.
    tie_start = cupy.cumsum(ties) - ties
    quota = cupy.minimum(cupy.maximum(state[1:].view(cupy.int64) - tie_start, 0), ties)
    kept = above + quota
    ends = cupy.cumsum(kept)
    if total is None:
        total = int(ends[-1])  # synchronize! the output size is data-dependent
    out = cupy.empty(total, dtype=cupy.int64)
    if total:
        get_kernel("select.cu", _COMPACT_WRITE[size])((nchunks,), (THREADS,), (*args, ends - kept, quota, out))
    return out


@implements("topk")
def topk(x: cupy.ndarray, k: int) -> cupy.ndarray:
    """Indices of the ``k`` largest ``|x|``, sorted; among equal magnitudes the lower index wins.

    Args:
        x: float16/32/64 data (NaN ranks above inf).
        k: how many, ``0 <= k <= x.size``.
    """
    n = x.size
    if k == 0:
        return cupy.empty(0, dtype=cupy.int64)
    keys, mask = float_keys(x)
    if k == n:
        return cupy.arange(n, dtype=cupy.int64)
    state = _state(0, k)
    _radix_select(keys, mask, state)
    return _compact(keys, mask, state, total=k)  # exactly k by construction: no sync


@implements("threshold")
def threshold(x: cupy.ndarray, tau: float) -> cupy.ndarray:
    """Sorted indices with ``|x| >= tau`` (NaN counts as larger than any number).

    Args:
        x: float16/32/64 data.
        tau: the threshold, a host number (rounded to ``x.dtype`` like the reference does).
    """
    keys, mask = float_keys(x)
    tau_key = int(reference.abs_key(np.array([tau], dtype=x.dtype))[0])
    if tau_key == 0:  # everything qualifies: ">= 0" is "> -1", which unsigned keys cannot express
        return cupy.arange(keys.size, dtype=cupy.int64)
    return _compact(keys, mask, _state(tau_key - 1, 0))


@implements("nonzero")
def nonzero(x: cupy.ndarray) -> cupy.ndarray:
    """Sorted indices of the elements that are not zero (NaN included, -0.0 excluded).

    Args:
        x: data of any dtype; floats use the compaction kernels, others ``cupy.flatnonzero``.
    """
    if x.dtype.kind != "f":
        return cupy.flatnonzero(x).astype(cupy.int64, copy=False)  # synchronize! (the count, inside CuPy)
    keys, mask = float_keys(x)
    return _compact(keys, mask, _state(0, 0))
