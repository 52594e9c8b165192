"""``none``: the array itself, as a payload (the uncompressed baseline)."""

from __future__ import annotations

from typing import Any

from .base import Compressor, Ctx
from .payload import Header
from .registry import register


@register
class NoCompression(Compressor):
    """Identity: the payload is the raw array (header + ``numel * itemsize`` bytes)."""

    name = "none"
    codec = 1
    kind = "dense"
    lossless = True

    def _encode(self, flat: Any, ctx: Ctx) -> Any:
        return self._payload(ctx, [flat])

    def _decode(self, payload: Any, header: Header, ctx: Ctx) -> Any:
        (values,) = self._sections(payload, header, [(ctx.dtype, ctx.numel)])
        return values.copy()
