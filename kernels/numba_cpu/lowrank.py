"""PowerSGD's reconstruction: rows in parallel, products rounded, added in order."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..arrays import deliver
from ..ops import implements
from .common import OPTS


@njit(**OPTS)
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


@implements("lowrank_reconstruct")
def lowrank_reconstruct(p: np.ndarray, q: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """See :func:`reference.lowrank_reconstruct`: rows in parallel, each row built ``r`` times in
    cache with SIMD over the columns (``q`` transposed so that a row of ``q.T`` is contiguous)."""
    direct = out is not None and out.dtype == np.float32 and out.shape == (size,) and out.flags.c_contiguous
    result = out if direct else np.empty(size, np.float32)
    _lowrank(np.ascontiguousarray(p, dtype=np.float32), np.ascontiguousarray(q.T, dtype=np.float32),
             size, result)
    return result if direct else deliver(result, out)
