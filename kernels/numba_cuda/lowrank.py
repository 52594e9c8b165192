"""PowerSGD's reconstruction: one thread per output element, products rounded before the add."""

from __future__ import annotations

import numpy as np
from numba import cuda

from ...backend import xp_of
from ..arrays import deliver, writable
from ..ops import implements
from .common import Array, launch, mul_f32


@cuda.jit
def _lowrank_kernel(p, q, size, out):
    r = p.shape[1]
    m = q.shape[0]
    for idx in range(cuda.grid(1), size, cuda.gridsize(1)):
        i = idx // m
        j = idx - i * m
        acc = np.float32(0.0)
        if r > 0:
            acc = mul_f32(p[i, 0], q[j, 0])
        for k in range(1, r):  # each product rounded (mul.rn), then added: never one fused multiply-add
            acc = acc + mul_f32(p[i, k], q[j, k])
        out[idx] = acc


@implements("lowrank_reconstruct")
def lowrank_reconstruct(p: Array, q: Array, size: int, out: Array | None = None) -> Array:
    """See :func:`reference.lowrank_reconstruct`; one thread per output element.

    Args:
        p: ``(n, r)`` float32.
        q: ``(m, r)`` float32.
        size: elements wanted (``<= n * m``).
        out: optional float32 array of ``size`` to write into.

    Returns:
        ``size`` float32 values (``out`` when given).
    """
    xp = xp_of(p)
    result = writable(out, xp, size, np.float32)
    launch(_lowrank_kernel, size, xp.ascontiguousarray(p, dtype=np.float32),
           xp.ascontiguousarray(q, dtype=np.float32), np.int64(size), result)
    return deliver(result, out)
