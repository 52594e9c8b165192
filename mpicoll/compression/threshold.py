"""``threshold``: every element with ``|x| >= tau`` (Strom, 2015). The count varies with the data."""

from __future__ import annotations

from typing import Any

from . import sparse
from .base import Compressor, Ctx, check_range
from .payload import Header
from .registry import register


@register
class Threshold(Compressor):
    """Keep elements whose magnitude reaches ``tau``."""

    name = "threshold"
    wire_id = 7
    kind = "sparse"

    def __init__(self, tau: float = 1e-3) -> None:
        super().__init__()
        self.tau = float(check_range(self.name, "tau", tau, 0.0, float("inf")))

    def params(self) -> dict[str, Any]:
        return {"tau": self.tau}

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        return sparse.encode(self, ctx, flat, self.kernel("threshold", ctx.device)(flat, self.tau), out)

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        return sparse.decode(self, payload, header, ctx, out)

    def sparse_parts(self, payload: Any, ctx: Ctx) -> tuple[Any, Any]:
        return sparse.parts(self, payload, ctx)
