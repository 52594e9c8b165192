"""``int8`` and ``int4``: uniform symmetric quantization with one float32 scale per block.

Per block of ``block`` elements, ``scale = max|x| / qmax`` (qmax 127 or 7) and each element
becomes ``round(x / scale)``, or with ``stochastic=True`` an unbiased random rounding drawn
from the counter hash of ``(seed, step, key, index)``. Codes are packed (int4: two per byte),
so the wire is ``n * bits / 8`` bytes plus ``4 * n / block`` for the scales. The error of
nearest rounding is at most half a quantization step, ``scale / 2``, per element.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import xp_of
from ..errors import ArgumentError
from ..kernels.hashing import stream_base
from .base import Compressor, Ctx, check_range
from .payload import Header, expect
from .registry import register

_SALT = 0x51554E54  # "QUNT"


class UniformQuantizer(Compressor):
    """Shared implementation; subclasses fix ``bits``."""

    kind = "quantized"
    bits = 8

    def __init__(self, block: int = 256, stochastic: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.block = int(check_range(self.name, "block", block, 1, 1 << 30, integer=True))
        if not isinstance(stochastic, bool):
            raise ArgumentError(f"{self.name}: stochastic={stochastic!r}; accepted: True or False")
        self.stochastic = stochastic
        self.seed = int(check_range(self.name, "seed", seed, 0, (1 << 63) - 1, integer=True))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def params(self) -> dict[str, Any]:
        return {"block": self.block, "stochastic": self.stochastic, "seed": self.seed}

    def payload_nbytes(self, x: Any) -> int | None:
        return self._size(block_spec(x.size, self.block, self.bits))

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        base = stream_base(self.seed, ctx.step, ctx.key, _SALT)
        payload, (scales, packed) = self._allocate(ctx, block_spec(ctx.numel, self.block, self.bits), xp_of(flat),
                                                   aux0=self.block, aux1=self.bits, out=out)
        self.kernel("quantize", ctx.device)(flat.astype(np.float32, copy=False), self.bits, self.block, "max",
                                            self.qmax, self.stochastic, base, out=(packed, scales))
        return payload

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        expect(header, self.name, flags=0, aux0=self.block, aux1=self.bits)
        return decode_blocks(self, payload, header, ctx, self.block, self.bits, out)


def block_spec(numel: int, block: int, bits: int) -> list[tuple[Any, int]]:
    """Sections of a block-quantized payload: one float32 scale per block, then the packed codes."""
    return [(np.float32, -(-numel // block)), (np.uint8, -(-numel * bits // 8))]


def decode_blocks(codec: Compressor, payload: Any, header: Header, ctx: Ctx, block: int, bits: int,
                  out: Any) -> Any:
    """Decode ``[scales, packed codes]`` with the receiver's own ``block`` and ``bits`` (the caller has
    checked that the header agrees)."""
    scales, packed = codec._sections(payload, header, block_spec(ctx.numel, block, bits))
    direct = out if out is not None and ctx.dtype == np.float32 else None
    values = codec.kernel("dequantize", ctx.device)(packed, scales, ctx.numel, bits, block, out=direct)
    return values.astype(ctx.dtype, copy=False)


@register
class Int8(UniformQuantizer):
    """8-bit codes, 4x smaller than float32 (plus scales)."""

    name = "int8"
    wire_id = 8
    bits = 8


@register
class Int4(UniformQuantizer):
    """4-bit codes, two per byte: 8x smaller than float32 (plus scales)."""

    name = "int4"
    wire_id = 9
    bits = 4
