"""fp16 and bf16 conversions on IEEE bits; fp16 decoding by a table NumPy built."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from ...backend import xp_of
from ..arrays import deliver, writable
from ..ops import implements
from .common import UNSIGNED, Array, half_bits, half_table, launch


@cuda.jit
def _fp16_encode_kernel(bits, out):
    for i in range(cuda.grid(1), bits.size, cuda.gridsize(1)):
        out[i] = half_bits(bits[i])


@cuda.jit
def _lookup_kernel(h, table, out):
    for i in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        out[i] = table[h[i]]


@cuda.jit
def _bf16_encode_kernel(bits, out):
    for i in range(cuda.grid(1), bits.size, cuda.gridsize(1)):
        b = bits[i]
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN: stays a NaN, made quiet
            out[i] = (b >> np.uint32(16)) | np.uint32(0x0040)
        else:  # round to nearest even on the upper half (a carry may reach inf, as it should)
            out[i] = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)


@cuda.jit
def _bf16_decode_kernel(h, out):
    for i in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        out[i] = np.uint32(h[i]) << np.uint32(16)


def _float_bits(x: Array) -> Array:
    """``x`` as contiguous 1-D float32, seen as its uint32 bits."""
    return xp_of(x).ascontiguousarray(x, dtype=np.float32).reshape(-1).view(np.uint32)


def _half_words(h: Array) -> Array:
    """16-bit data (uint16 or float16) as contiguous 1-D uint16 words."""
    return xp_of(h).ascontiguousarray(h).reshape(-1).view(np.uint16)


def _convert(kernel: Any, words: Array, dtype: Any, out: Array | None, *tables: Array) -> Array:
    """One element-wise conversion kernel over ``words``: the result has ``dtype`` (the kernel writes
    its bit pattern) and lands in ``out`` when given."""
    result = writable(out, xp_of(words), words.size, dtype)
    launch(kernel, words.size, words, *tables, result.view(UNSIGNED[np.dtype(dtype).itemsize]))
    return deliver(result, out)


@implements("fp16_encode")
def fp16_encode(x: Array, out: Array | None = None) -> Array:
    """float32 -> IEEE half bits (round to nearest even; overflow to inf; NaN -> 0x7E00 | sign).

    Args:
        x: 1-D array, converted to float32.
        out: optional uint16 array to write into.

    Returns:
        uint16 bits (``out`` when given).
    """
    return _convert(_fp16_encode_kernel, _float_bits(x), np.uint16, out)


@implements("fp16_decode")
def fp16_decode(h: Array, out: Array | None = None) -> Array:
    """IEEE half bits -> float32 (exact; a table lookup).

    Args:
        h: 1-D uint16 (or float16) array of half bits.
        out: optional float32 array to write into.

    Returns:
        float32 values (``out`` when given).
    """
    words = _half_words(h)
    return _convert(_lookup_kernel, words, np.float32, out, half_table(xp_of(words)))


@implements("bf16_encode")
def bf16_encode(x: Array, out: Array | None = None) -> Array:
    """float32 -> bfloat16 bits: round to nearest even on the upper 16 bits; NaN stays a quiet NaN.
    Arguments and result as :func:`fp16_encode`."""
    return _convert(_bf16_encode_kernel, _float_bits(x), np.uint16, out)


@implements("bf16_decode")
def bf16_decode(h: Array, out: Array | None = None) -> Array:
    """bfloat16 bits -> float32 (exact). Arguments and result as :func:`fp16_decode`."""
    return _convert(_bf16_decode_kernel, _half_words(h), np.float32, out)
