"""Block quantization and 1-bit signs (quantize.cu), with the reference's ordered float64 sums."""

from __future__ import annotations

from typing import Any

import cupy
import numpy as np

from .. import reference
from ..arrays import deliver, writable
from ..ops import implements, scale_kind_code
from .common import THREADS, launch, u64
from .halves import as_f32

#: blocks of at least this many elements take the shared-memory kernels of quantize.cu (their lanes
#: are long enough that waiting on one load per add dominated: 3.4 ms for one scale over 64 MiB)
TILED_FROM = 16384
TILE = 2048  # MPICOLL_TILE of quantize.cu: terms staged per step


def _block_scales(x: cupy.ndarray, block: int, scale_kind: str, qmax: float, out: Any = None) -> cupy.ndarray:
    """Per-block ``norm / qmax`` in float32 (``reference._block_scales``), in ``out`` when it fits.

    The float64 sums follow ``reference.ordered_sum``: one partial per (block, chunk, lane),
    then one thread per block adds them in the contract's order (see quantize.cu). Long blocks
    use the shared-memory versions of both kernels: the same additions in the same order.
    """
    kind = scale_kind_code(scale_kind)  # MPICOLL_SCALE_* of quantize.cu
    block = int(block)
    nblocks = -(-x.size // block)
    scales = writable(out, cupy, (nblocks,), np.float32)
    chunk, lanes = reference.REDUCE_CHUNK, reference.REDUCE_LANES
    per_block = -(-block // chunk)
    partial = cupy.empty(nblocks * per_block * lanes, dtype=cupy.float64)
    if min(block, chunk) >= TILED_FROM:  # long lanes: a thread block per chunk, staged in shared memory
        if lanes > THREADS or TILE % lanes:  # what the tiled kernels assume (MPICOLL_TILE in quantize.cu)
            raise RuntimeError(f"the tiled scale kernels need lanes <= {THREADS} dividing {TILE}, got {lanes}")
        chunks = nblocks * per_block
        launch("quantize.cu", "mpicoll_scale_partials_tiled", chunks * THREADS, x, np.int64(x.size),
               np.int64(block), np.int32(kind), np.int64(chunk), np.int32(lanes), np.int64(per_block),
               np.int64(chunks), partial)
    else:
        launch("quantize.cu", "mpicoll_scale_partials", partial.size, x, np.int64(x.size), np.int64(block),
               np.int32(kind), np.int64(chunk), np.int32(lanes), np.int64(per_block), np.int64(partial.size), partial)
    if per_block > 1:  # several chunks per block: their partials are staged too
        launch("quantize.cu", "mpicoll_block_scales_tiled", nblocks * THREADS, partial, np.int64(x.size),
               np.int64(block), np.int32(kind), np.int32(lanes), np.int64(per_block), np.float32(qmax), scales)
    else:
        launch("quantize.cu", "mpicoll_block_scales", nblocks, partial, np.int64(x.size), np.int64(block),
               np.int32(kind), np.int32(lanes), np.int64(per_block), np.float32(qmax), scales)
    return scales


@implements("quantize")
def quantize(x: cupy.ndarray, bits: int, block: int, scale_kind: str, qmax: int, stochastic: bool, base: int,
             out: tuple[Any, Any] | None = None) -> tuple[cupy.ndarray, cupy.ndarray]:
    """Symmetric per-block quantization to packed ``bits``-bit codes (see :func:`.reference.quantize`).

    Args:
        x: data, converted to float32 first.
        bits: 4 (two codes per byte, the even element in the low nibble) or 8.
        block: elements per scale.
        scale_kind: ``"max"``, ``"l2"`` or ``"mean"``.
        qmax: the largest code magnitude.
        stochastic: round by ``floor(v + u_i)`` with counter-hash uniforms instead of to nearest even.
        base: the 64-bit counter base of the uniforms.
        out: optional ``(packed, scales)`` to write into.

    Returns:
        (packed codes, scales): ``ceil(n * bits / 8)`` uint8 and ``ceil(n / block)`` float32.
    """
    block = int(block)
    x = as_f32(x).ravel()
    n = x.size
    nbytes = (n * bits + 7) // 8
    scales = _block_scales(x, block, scale_kind, qmax, None if out is None else out[1])
    packed = writable(None if out is None else out[0], cupy, (nbytes,), np.uint8)
    launch("quantize.cu", "mpicoll_quantize_pack", nbytes, x, np.int64(n), np.int32(bits), np.int64(block),
           scales, np.float32(qmax), np.int32(bool(stochastic)), u64(base), packed, np.int64(nbytes))
    return deliver((packed, scales), out)


@implements("dequantize")
def dequantize(packed: cupy.ndarray, scales: cupy.ndarray, n: int, bits: int, block: int,
               out: Any = None) -> cupy.ndarray:
    """``code_i * scale_b`` in float32: the inverse of :func:`quantize` up to rounding.

    Args:
        packed: uint8 codes from :func:`quantize`.
        scales: float32 block scales.
        n: element count.
        bits: 4 or 8.
        block: elements per scale.
        out: optional float32 array of ``n`` to write into.
    """
    block = int(block)
    packed = cupy.ascontiguousarray(packed).ravel().view(cupy.uint8)
    scales = as_f32(scales).ravel()
    result = writable(out, cupy, (n,), np.float32)
    launch("quantize.cu", "mpicoll_dequantize", n,
           packed, scales, np.int64(n), np.int32(bits), np.int64(block), result)
    return deliver(result, out)


@implements("sign_pack")
def sign_pack(x: cupy.ndarray, block: int, out: tuple[Any, Any] | None = None) -> tuple[cupy.ndarray, cupy.ndarray]:
    """1 bit per element (1 where ``x < 0``; element ``8j+t`` is bit ``t`` of byte ``j``) and
    per-block scales ``mean |x|``.

    Args:
        x: data, converted to float32 first.
        block: elements per scale.
        out: optional ``(packed, scales)`` to write into.
    """
    x = as_f32(x).ravel()
    scales = _block_scales(x, block, "mean", 1, None if out is None else out[1])
    nbytes = -(-x.size // 8)
    packed = writable(None if out is None else out[0], cupy, (nbytes,), np.uint8)
    launch("quantize.cu", "mpicoll_sign_pack", nbytes, x, np.int64(x.size), packed, np.int64(nbytes))
    return deliver((packed, scales), out)


@implements("sign_unpack")
def sign_unpack(packed: cupy.ndarray, scales: cupy.ndarray, n: int, block: int, out: Any = None) -> cupy.ndarray:
    """``(1 - 2 * bit) * scale_b`` in float32.

    Args:
        packed: uint8 sign bits from :func:`sign_pack`.
        scales: float32 block scales.
        n: element count.
        block: elements per scale.
        out: optional float32 array of ``n`` to write into.
    """
    block = int(block)
    packed = cupy.ascontiguousarray(packed).ravel().view(cupy.uint8)
    scales = as_f32(scales).ravel()
    result = writable(out, cupy, (n,), np.float32)
    launch("quantize.cu", "mpicoll_sign_unpack", n, packed, scales, np.int64(n), np.int64(block), result)
    return deliver(result, out)
