"""The counter-based hash behind every random choice (random-k indices, stochastic rounding).

A random number is a pure function of ``(seed, step, key, index)``: no generator state, no
global RNG, so every provider (NumPy, Numba CPU, Numba CUDA, CuPy) and every rank computes the
same bits for the same element. The mixer is SplitMix64's finalizer (Steele, Lea & Flood, 2014),
which needs only 64-bit xor, shift and multiply, all exact and identical in every provider.

The host folds ``(seed, step, key)`` into one 64-bit ``base`` per call (:func:`stream_base`);
kernels then compute ``mix64(base + index)`` per element:

- :func:`uniform24`: ``(mix64(base + i) >> 40) * 2**-24``, a float32 in ``[0, 1)`` with 24
  significant bits, exactly representable, so there is no rounding to disagree about.
- random-k draws index ``j`` of each stratum from ``mix64(base + j)`` modulo the stratum size.
"""

from __future__ import annotations

import zlib

import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MUL1 = 0xBF58476D1CE4E5B9
MUL2 = 0x94D049BB133111EB
UNIFORM_SCALE = 1.0 / (1 << 24)


def mix64(z: int) -> int:
    """SplitMix64 finalizer on a Python int (host side; kernels implement the same steps)."""
    z = (z + GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MUL1) & MASK64
    z = ((z ^ (z >> 27)) * MUL2) & MASK64
    return z ^ (z >> 31)


def key_id(key: object) -> int:
    """A stable 64-bit id for a tensor key (int or str), the same in every process."""
    if isinstance(key, (int, np.integer)):
        return int(key) & MASK64
    data = str(key).encode("utf-8")
    return (zlib.crc32(data) << 32 | zlib.adler32(data)) & MASK64


def stream_base(seed: int, step: int, key: object, salt: int = 0) -> int:
    """Fold ``(seed, step, key)`` (and a per-use ``salt``) into the 64-bit base of one call."""
    z = mix64((int(seed) & MASK64) ^ salt)
    z = mix64(z ^ (int(step) & MASK64))
    return mix64(z ^ key_id(key))


def mix64_array(counters: np.ndarray) -> np.ndarray:
    """:func:`mix64` over a uint64 array (NumPy wraps uint64 arithmetic modulo 2**64)."""
    with np.errstate(over="ignore"):
        z = counters.astype(np.uint64) + np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MUL1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MUL2)
        return z ^ (z >> np.uint64(31))


def uniform24(base: int, start: int, count: int) -> np.ndarray:
    """float32 uniforms in ``[0, 1)`` for counters ``base + start .. base + start + count - 1``."""
    with np.errstate(over="ignore"):
        counters = np.uint64(base) + np.arange(start, start + count, dtype=np.uint64)
    bits = mix64_array(counters) >> np.uint64(40)
    return bits.astype(np.float32) * np.float32(UNIFORM_SCALE)
