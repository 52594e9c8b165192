"""Counter-hash random numbers: uniforms and stratified indices, one thread per element."""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..ops import implements
from .common import Array, default_xp, launch, lesser, mix64, uniform_at


@cuda.jit
def _uniform_kernel(base, out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = uniform_at(base, i)


@implements("uniform")
def uniform(base: int, n: int) -> Array:
    """float32 uniforms in [0, 1): element ``i`` is ``uniform24(base + i)``.

    Args:
        base: the 64-bit stream base (``0 <= base < 2**64``).
        n: how many.

    Returns:
        float32 array (CuPy on a GPU when installed, NumPy under the simulator).
    """
    out = default_xp().empty(n, dtype=np.float32)
    launch(_uniform_kernel, n, np.uint64(base), out)
    return out


@cuda.jit
def _stratified_kernel(base, n, out):
    k = out.size
    small, extra = n // k, n % k
    for j in range(cuda.grid(1), k, cuda.gridsize(1)):
        size = small + (1 if j < extra else 0)
        start = j * small + lesser(j, extra)
        out[j] = start + np.int64(mix64(base + np.uint64(j)) % np.uint64(size))


@implements("stratified_indices")
def stratified_indices(base: int, n: int, k: int) -> Array:
    """``k`` distinct sorted indices in ``[0, n)``, one per stratum, drawn by the counter hash.

    Args:
        base: the 64-bit stream base.
        n: the population size.
        k: how many (``0 <= k <= n``).

    Returns:
        int64 array (CuPy on a GPU when installed, NumPy under the simulator).
    """
    out = default_xp().empty(k, dtype=np.int64)
    launch(_stratified_kernel, k, np.uint64(base), np.int64(n), out)
    return out
