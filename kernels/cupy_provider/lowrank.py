"""PowerSGD's reconstruction (lowrank.cu): one thread per output element."""

from __future__ import annotations

from typing import Any

import cupy
import numpy as np

from ..arrays import deliver, writable
from ..ops import implements, lowrank_shape
from .common import launch


@implements("lowrank_reconstruct")
def lowrank_reconstruct(p: cupy.ndarray, q: cupy.ndarray, size: int, out: Any = None) -> cupy.ndarray:
    """See :func:`reference.lowrank_reconstruct`; one thread per output element.

    Args:
        p: ``(n, r)`` float32.
        q: ``(m, r)`` float32.
        size: elements wanted (``<= n * m``).
        out: optional float32 array of ``size`` to write into.
    """
    m, r = lowrank_shape(p, q, size)[1:]
    result = writable(out, cupy, (size,), np.float32)
    launch("lowrank.cu", "mpicoll_lowrank_reconstruct", size,
           cupy.ascontiguousarray(p, dtype=np.float32), cupy.ascontiguousarray(q, dtype=np.float32),
           np.int64(m), np.int64(r), np.int64(size), result)
    return deliver(result, out)
