"""fp16 and bf16 (halves.cu), and the NumPy-exact casts to float32 the other families use."""

from __future__ import annotations

from typing import Any

import cupy
import numpy as np

from ..arrays import deliver, writable
from ..ops import implements
from .common import UNSIGNED, get_kernel, launch, run


def as_f32(x: cupy.ndarray) -> cupy.ndarray:
    """``x`` as contiguous float32, converted exactly as NumPy's ``astype(float32)`` (NaN bits too)."""
    x = cupy.ascontiguousarray(x)
    if x.dtype == np.float32:
        return x
    if x.dtype == np.float16:
        return fp16_decode(x)
    if x.dtype == np.float64:
        out = cupy.empty(x.shape, dtype=cupy.float32)
        launch("halves.cu", "mpicoll_f64_to_f32", x.size, x.view(cupy.uint64), np.int64(x.size), out)
        return out
    return x.astype(cupy.float32)  # integers and booleans: no NaN, and both round to nearest even


def cast(a: cupy.ndarray, dtype: np.dtype) -> cupy.ndarray:
    """``a`` as contiguous ``dtype``; exact NumPy bits for casts to float32 and from float32 to
    float64, CuPy's ``astype`` otherwise (no float32 arithmetic, so its flushing cannot show)."""
    a = cupy.ascontiguousarray(a)
    if a.dtype == dtype:
        return a
    if dtype == np.float32:
        return as_f32(a)
    if dtype == np.float64 and a.dtype == np.float32:  # CuPy's astype would flush subnormals (-ftz=true)
        out = cupy.empty(a.shape, dtype=cupy.float64)
        launch("halves.cu", "mpicoll_f32_to_f64", a.size, a.view(cupy.uint32), np.int64(a.size), out)
        return out
    return a.astype(dtype)



def _map16(kernel: cupy.RawKernel, words: cupy.ndarray, dtype: Any, out: Any) -> Any:
    """An elementwise halves.cu kernel over contiguous words; the result has ``dtype`` and the
    words' shape, and lands in ``out`` when given."""
    result = writable(out, cupy, words.shape, dtype)
    kernel_words = result.view(UNSIGNED[np.dtype(dtype).itemsize])  # the kernels write bit patterns
    run(kernel, words.size, words, np.int64(words.size), kernel_words)
    return deliver(result, out)


@implements("fp16_encode")
def fp16_encode(x: cupy.ndarray, out: Any = None) -> cupy.ndarray:
    """float32 -> IEEE half bits (uint16): round to nearest even, overflow to inf, NaN -> ``0x7E00 | sign``.

    Args:
        x: data, converted to float32 first.
        out: optional uint16 array of ``x``'s shape to write into.
    """
    return _map16(get_kernel("halves.cu", "mpicoll_fp16_encode"), as_f32(x).view(cupy.uint32), np.uint16, out)


@implements("fp16_decode")
def fp16_decode(h: cupy.ndarray, out: Any = None) -> cupy.ndarray:
    """IEEE half bits -> float32, exact (a NaN keeps its payload, as in NumPy).

    Args:
        h: uint16 (or float16) data.
        out: optional float32 array of ``h``'s shape to write into.
    """
    words = cupy.ascontiguousarray(h).view(cupy.uint16)
    return _map16(get_kernel("halves.cu", "mpicoll_fp16_decode"), words, np.float32, out)


@implements("bf16_encode")
def bf16_encode(x: cupy.ndarray, out: Any = None) -> cupy.ndarray:
    """float32 -> bfloat16 bits (uint16): round to nearest even; NaN stays a quiet NaN. Arguments as
    :func:`fp16_encode`."""
    return _map16(get_kernel("halves.cu", "mpicoll_bf16_encode"), as_f32(x).view(cupy.uint32), np.uint16, out)


@implements("bf16_decode")
def bf16_decode(h: cupy.ndarray, out: Any = None) -> cupy.ndarray:
    """bfloat16 bits -> float32, exact. Arguments as :func:`fp16_decode` (``h``: uint16 data)."""
    words = cupy.ascontiguousarray(h).view(cupy.uint16)
    return _map16(get_kernel("halves.cu", "mpicoll_bf16_decode"), words, np.float32, out)
