"""``sign``: one bit per element plus one scale per block (EF-SignSGD, 1-bit Adam).

Each element becomes ``+scale`` or ``-scale`` with ``scale = mean |x|`` over its block (the
whole tensor by default, as in Karimireddy et al., 2019). Bits are packed eight to a byte, so
the wire is 32x smaller than float32. Biased on its own: use it inside ``ErrorFeedback``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import xp_of
from .base import Compressor, Ctx, check_range
from .payload import Header, expect
from .registry import register
from .uniform import block_spec


@register
class Sign(Compressor):
    """1-bit sign compression with mean-magnitude scales."""

    name = "sign"
    wire_id = 11
    kind = "quantized"

    def __init__(self, block: int | None = None) -> None:
        super().__init__()
        self.block = None if block is None else int(check_range(self.name, "block", block, 1, 1 << 40, integer=True))

    def params(self) -> dict[str, Any]:
        return {"block": self.block}

    def _block(self, numel: int) -> int:
        return self.block or max(1, numel)

    def payload_nbytes(self, x: Any) -> int | None:
        return self._size(block_spec(x.size, self._block(x.size), 1))

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        block = self._block(ctx.numel)
        payload, (scales, packed) = self._allocate(ctx, block_spec(ctx.numel, block, 1), xp_of(flat), aux0=block,
                                                   out=out)
        self.kernel("sign_pack", ctx.device)(flat.astype(np.float32, copy=False), block, out=(packed, scales))
        return payload

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        block = self._block(ctx.numel)
        expect(header, self.name, flags=0, aux0=block, aux1=0)
        scales, packed = self._sections(payload, header, block_spec(ctx.numel, block, 1))
        direct = out if out is not None and ctx.dtype == np.float32 else None
        values = self.kernel("sign_unpack", ctx.device)(packed, scales, ctx.numel, block, out=direct)
        return values.astype(ctx.dtype, copy=False)
