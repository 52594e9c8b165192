"""``none``: the array itself, as a payload (the uncompressed baseline)."""

from __future__ import annotations

from typing import Any

from .base import Compressor, Ctx
from .payload import Header, expect
from .registry import register


@register
class NoCompression(Compressor):
    """Identity: the payload is the raw array (header + ``numel * itemsize`` bytes)."""

    name = "none"
    wire_id = 1
    kind = "summable"
    lossless = True

    def payload_nbytes(self, x: Any) -> int | None:
        return self._size([(x.dtype, x.size)])

    def summable_section(self, payload: Any, ctx: Ctx) -> tuple[Any, str]:
        (values,) = self._sections(payload, self.header_of(payload, ctx), [(ctx.dtype, ctx.numel)])
        return values, "values"

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        return self._payload(ctx, [flat], out=out)

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        expect(header, self.name, flags=0, aux0=0, aux1=0)
        (values,) = self._sections(payload, header, [(ctx.dtype, ctx.numel)])
        if out is None:
            return values.copy()
        out[...] = values
        return out
