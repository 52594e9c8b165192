"""Counter-hash random numbers (hash.cu): uniforms and stratified indices."""

from __future__ import annotations

import cupy
import numpy as np

from ..ops import implements
from .common import launch, u64


@implements("uniform")
def uniform(base: int, n: int) -> cupy.ndarray:
    """float32 uniforms in ``[0, 1)``: element ``i`` is ``hashing.uniform24(base + i)``.

    Args:
        base: the 64-bit counter base (int or numpy.uint64).
        n: how many.
    """
    out = cupy.empty(n, dtype=cupy.float32)
    launch("hash.cu", "mpicoll_uniform", n, u64(base), np.int64(n), out)
    return out


@implements("stratified_indices")
def stratified_indices(base: int, n: int, k: int) -> cupy.ndarray:
    """``k`` sorted int64 indices in ``[0, n)``, one per stratum (see :func:`.reference.stratified_indices`).

    Args:
        base: the 64-bit counter base.
        n: the population size.
        k: how many, ``0 <= k <= n``.
    """
    out = cupy.empty(k, dtype=cupy.int64)
    launch("hash.cu", "mpicoll_stratified_indices", k, u64(base), np.int64(n), np.int64(k), out)
    return out
