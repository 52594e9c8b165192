"""``coo``: lossless (index, value) pairs of the nonzeros of an array that is mostly zero."""

from __future__ import annotations

from typing import Any

from . import sparse
from .base import Compressor, Ctx
from .payload import Header
from .registry import register


@register
class Coo(Compressor):
    """Coordinate format for 1-D (or flattened) sparse arrays."""

    name = "coo"
    wire_id = 13
    kind = "sparse"
    lossless = True

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        return sparse.encode(self, ctx, flat, self.kernel("nonzero", ctx.device)(flat), out)

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        return sparse.decode(self, payload, header, ctx, out)

    def sparse_parts(self, payload: Any, ctx: Ctx) -> tuple[Any, Any]:
        return sparse.parts(self, payload, ctx)
