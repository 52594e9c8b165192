"""``fp16`` and ``bf16``: 16-bit floats on the wire (2x smaller than float32), summable.

fp16 keeps 11 significant bits but overflows above 65504; bf16 keeps float32's range with 8
significant bits. Both round to nearest even. Decoding gives float32 (then the input dtype), so
sums of decoded payloads accumulate in float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import xp_of
from .base import Compressor, Ctx
from .payload import Header, expect
from .registry import register


class _Half(Compressor):
    kind = "summable"
    encode_op = ""
    decode_op = ""

    def payload_nbytes(self, x: Any) -> int | None:
        return self._size([(np.uint16, x.size)])

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        payload, (bits,) = self._allocate(ctx, [(np.uint16, ctx.numel)], xp_of(flat), out=out)
        self.kernel(self.encode_op, ctx.device)(flat.astype(np.float32, copy=False), out=bits)
        return payload

    def summable_section(self, payload: Any, ctx: Ctx) -> tuple[Any, str]:
        header = self.header_of(payload, ctx)
        (bits,) = self._sections(payload, header, [(np.uint16, ctx.numel)])
        return bits, self.name

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        expect(header, self.name, flags=0, aux0=0, aux1=0)
        (bits,) = self._sections(payload, header, [(np.uint16, ctx.numel)])
        direct = out if out is not None and ctx.dtype == np.float32 else None
        values = self.kernel(self.decode_op, ctx.device)(bits, out=direct)
        return values.astype(ctx.dtype, copy=False)


@register
class Fp16(_Half):
    """IEEE half precision on the wire."""

    name = "fp16"
    wire_id = 2
    narrow_range = True
    encode_op, decode_op = "fp16_encode", "fp16_decode"


@register
class Bf16(_Half):
    """bfloat16 on the wire."""

    name = "bf16"
    wire_id = 3
    encode_op, decode_op = "bf16_encode", "bf16_decode"
