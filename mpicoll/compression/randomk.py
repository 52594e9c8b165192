"""``randomk``: ``k = ceil(ratio * n)`` elements chosen at random, the same on every rank.

Indices are not sent: every rank derives them from ``(seed, step, key)`` with the counter hash
(one index per stratum of ``n / k`` elements, so they are distinct and sorted), which makes the
payloads of all ranks *summable*: the value vectors can be added element by element. The wire
carries ``k`` values and, in the header, a fingerprint of the random stream so that ranks whose
steps or seeds disagree get a clear error instead of silently mixing different indices.
"""

from __future__ import annotations

from typing import Any

from ..backend import xp_of
from ..errors import PayloadError
from ..kernels.hashing import stream_base
from .base import Compressor, Ctx, check_range
from .payload import Header, expect
from .registry import register
from .topk import k_of

_SALT = 0x52414E444B  # "RANDK": random-k draws never reuse stochastic rounding's stream


@register
class RandomK(Compressor):
    """Random-k sparsification with indices shared by all ranks."""

    name = "randomk"
    wire_id = 6
    kind = "summable"

    def __init__(self, ratio: float = 0.01, seed: int = 0) -> None:
        super().__init__()
        self.ratio = float(check_range(self.name, "ratio", ratio, 0.0, 1.0, lo_open=True))
        self.seed = int(check_range(self.name, "seed", seed, 0, (1 << 63) - 1, integer=True))

    def params(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "seed": self.seed}

    def indices(self, ctx: Ctx) -> tuple[Any, int]:
        """The shared indices of this tensor and step, and the stream's base."""
        base = stream_base(self.seed, ctx.step, ctx.key, _SALT)
        idx = self.kernel("stratified_indices", ctx.device)(base, ctx.numel, k_of(self.ratio, ctx.numel))
        return idx, base

    def stream(self, ctx: Ctx) -> int | None:
        """The stream base of this call (seed, step, key): ranks that disagree would mix different indices."""
        return stream_base(self.seed, ctx.step, ctx.key, _SALT) & ((1 << 63) - 1)

    def payload_nbytes(self, x: Any) -> int | None:
        return self._size([(x.dtype, k_of(self.ratio, x.size))])

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        idx, base = self.indices(ctx)
        payload, (values,) = self._allocate(ctx, [(ctx.dtype, idx.size)], xp_of(flat), aux0=int(idx.size), aux1=base,
                                            out=out)
        xp_of(flat).take(flat, idx, out=values)
        return payload

    def summable_section(self, payload: Any, ctx: Ctx) -> tuple[Any, str]:
        header = self.header_of(payload, ctx)
        (values,) = self._sections(payload, header, [(ctx.dtype, header.aux0)])
        return values, "values"

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        idx, base = self.indices(ctx)
        expect(header, self.name, flags=0)
        if header.aux1 != base or header.aux0 != idx.size:
            raise PayloadError(f"{self.name}: payload was drawn from another random stream (key {ctx.key!r}, step "
                               f"{ctx.step}); every rank must use the same seed and compress each key equally often")
        (values,) = self._sections(payload, header, [(ctx.dtype, idx.size)])
        dense = xp_of(values).zeros(ctx.numel, dtype=ctx.dtype) if out is None else out
        if out is not None:
            dense[...] = 0
        dense[idx] = values
        return dense
