"""``topk``: the ``k = ceil(ratio * n)`` largest-magnitude elements, exactly.

Ties are broken toward the lower index, so every provider selects the same elements. Wire:
``k`` indices (4 bytes each up to 2**32 elements) and ``k`` values.
"""

from __future__ import annotations

import math
from typing import Any

from . import sparse
from .base import Compressor, Ctx, check_range
from .payload import Header
from .registry import register


def k_of(ratio: float, numel: int) -> int:
    """``ceil(ratio * numel)``, at least 1 for a non-empty tensor."""
    return 0 if numel == 0 else min(numel, max(1, math.ceil(ratio * numel)))


@register
class TopK(Compressor):
    """Exact top-k by magnitude."""

    name = "topk"
    wire_id = 4
    kind = "sparse"

    def __init__(self, ratio: float = 0.01) -> None:
        super().__init__()
        self.ratio = float(check_range(self.name, "ratio", ratio, 0.0, 1.0, lo_open=True))

    def params(self) -> dict[str, Any]:
        return {"ratio": self.ratio}

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        idx = self.kernel("topk", ctx.device)(flat, k_of(self.ratio, ctx.numel))
        return sparse.encode(self, ctx, flat, idx, out)

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        return sparse.decode(self, payload, header, ctx, out)

    def sparse_parts(self, payload: Any, ctx: Ctx) -> tuple[Any, Any]:
        return sparse.parts(self, payload, ctx)
