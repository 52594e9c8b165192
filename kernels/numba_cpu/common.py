"""What the Numba CPU families share: compile options, the counter hash, chunking, bit keys."""

from __future__ import annotations

import numba
import numpy as np
from numba import njit

from .. import reference
from ..hashing import GOLDEN, MUL1, MUL2

_GOLDEN, _MUL1, _MUL2 = np.uint64(GOLDEN), np.uint64(MUL1), np.uint64(MUL2)
UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}
OPTS = {"parallel": True, "cache": True, "nogil": True}
SMALL = 1 << 16  # below this many elements, 65536-bin histograms cost more than a partition
CHUNK = reference.REDUCE_CHUNK  # even, so chunks never split a packed byte of an even-sized block


@njit(inline="always")
def mix64(z):
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def uniform_at(base, i):
    return np.float32(mix64(base + np.uint64(i)) >> np.uint64(40)) * np.float32(1.0 / (1 << 24))


def chunks(n: int) -> int:
    """How many parallel chunks to cut ``n`` elements into."""
    return max(1, min(n // 65536 + 1, 8 * numba.get_num_threads()))


def bit_keys(x: np.ndarray):
    """Unsigned views of a float array's bits, and the mask that clears the sign (keys order like |x|)."""
    utype = UNSIGNED[x.dtype.itemsize]
    mask = utype((1 << (8 * x.dtype.itemsize - 1)) - 1)
    return np.ascontiguousarray(x).view(utype), mask
