"""Counter-hash random numbers: uniforms and stratified indices."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..ops import implements
from .common import OPTS, mix64


@njit(**OPTS)
def _uniform(base, n):
    out = np.empty(n, dtype=np.float32)
    scale = np.float32(1.0 / (1 << 24))
    for i in prange(n):
        out[i] = np.float32(mix64(base + np.uint64(i)) >> np.uint64(40)) * scale
    return out


@implements("uniform")
def uniform(base: int, n: int) -> np.ndarray:
    return _uniform(np.uint64(base), n)


@njit(**OPTS)
def _stratified(base, n, k):
    out = np.empty(k, dtype=np.int64)
    small, extra = n // k, n % k
    for j in prange(k):
        size = small + (1 if j < extra else 0)
        start = j * small + min(j, extra)
        out[j] = start + np.int64(mix64(base + np.uint64(j)) % np.uint64(size))
    return out


@implements("stratified_indices")
def stratified_indices(base: int, n: int, k: int) -> np.ndarray:
    if k == 0:
        return np.empty(0, dtype=np.int64)
    return _stratified(np.uint64(base), n, k)
