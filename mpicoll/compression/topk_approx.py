"""``topk_approx``: about ``ratio * n`` largest-magnitude elements in one pass (DGC style).

The threshold is the ``ratio`` quantile of ``|x|`` over a strided sample of about ``sample``
elements (Lin et al., Deep Gradient Compression, 2018); one pass over ``x`` then keeps every
element at or above it. Much cheaper than an exact selection; the count is close to, not
exactly, ``k`` (it is the same on every provider, since the sample is deterministic).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import to_host
from . import sparse
from .base import Compressor, Ctx, check_range
from .payload import Header
from .registry import register
from .topk import k_of


@register
class TopKApprox(Compressor):
    """Approximate top-k by a threshold estimated on a sample."""

    name = "topk_approx"
    wire_id = 5
    kind = "sparse"

    def __init__(self, ratio: float = 0.01, sample: int = 65536) -> None:
        super().__init__()
        self.ratio = float(check_range(self.name, "ratio", ratio, 0.0, 1.0, lo_open=True))
        self.sample = int(check_range(self.name, "sample", sample, 16, 1 << 30, integer=True))

    def params(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "sample": self.sample}

    def threshold(self, flat: Any) -> float:
        """The estimated magnitude of the ``k``-th largest element."""
        stride = max(1, flat.size // self.sample)
        sample = np.abs(to_host(flat[::stride]).astype(np.float64))  # synchronize! (device input)
        kk = k_of(self.ratio, sample.size)
        return float(np.partition(sample, sample.size - kk)[sample.size - kk])

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        if ctx.numel == 0:
            return sparse.encode(self, ctx, flat, flat[:0].astype(np.int64), out)
        idx = self.kernel("threshold", ctx.device)(flat, self.threshold(flat))
        return sparse.encode(self, ctx, flat, idx, out)

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        return sparse.decode(self, payload, header, ctx, out)

    def sparse_parts(self, payload: Any, ctx: Ctx) -> tuple[Any, Any]:
        return sparse.parts(self, payload, ctx)
