"""``qsgd``: QSGD (Alistarh et al., 2017) with ``levels`` quantization levels per block.

Per block, ``norm = ||x||_2`` and each element becomes ``sign(x) * l`` where ``l`` rounds
``levels * |x| / norm`` up or down at random, unbiased: ``E[decode] = x``. Codes take 4 bits
for up to 7 levels and 8 bits up to 127, packed. The block norm is accumulated in float64 in a
fixed order, so every provider produces the same payload.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import xp_of
from ..kernels.hashing import stream_base
from .base import Compressor, Ctx, check_range
from .payload import Header, expect
from .registry import register
from .uniform import block_spec, decode_blocks

_SALT = 0x51534744  # "QSGD"


@register
class Qsgd(Compressor):
    """Unbiased stochastic quantization to ``levels`` levels of the block's L2 norm."""

    name = "qsgd"
    wire_id = 10
    kind = "quantized"

    def __init__(self, levels: int = 127, block: int = 4096, seed: int = 0) -> None:
        super().__init__()
        self.levels = int(check_range(self.name, "levels", levels, 1, 127, integer=True))
        self.block = int(check_range(self.name, "block", block, 1, 1 << 30, integer=True))
        self.seed = int(check_range(self.name, "seed", seed, 0, (1 << 63) - 1, integer=True))
        self.bits = 4 if self.levels <= 7 else 8

    def params(self) -> dict[str, Any]:
        return {"levels": self.levels, "block": self.block, "seed": self.seed}

    def payload_nbytes(self, x: Any) -> int | None:
        return self._size(block_spec(x.size, self.block, self.bits))

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        base = stream_base(self.seed, ctx.step, ctx.key, _SALT)
        payload, (scales, packed) = self._allocate(ctx, block_spec(ctx.numel, self.block, self.bits), xp_of(flat),
                                                   aux0=self.block, aux1=self.levels, out=out)
        self.kernel("quantize", ctx.device)(flat.astype(np.float32, copy=False), self.bits, self.block, "l2",
                                            self.levels, True, base, out=(packed, scales))
        return payload

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        expect(header, self.name, flags=0, aux0=self.block, aux1=self.levels)
        return decode_blocks(self, payload, header, ctx, self.block, self.bits, out)
