"""``Wrapper(inner)``: a compressor that adds something around another and forwards the rest.

A compressed collective talks to its codec through the whole :class:`~.base.Compressor`
protocol: the traits (``name``, ``wire_id``, ``kind``, ``lossless``, ``narrow_range``), the
payload's size and bound, the random stream it must share, the shape it binds residuals to, the
snapshot a refused call restores, the sections it sums or gathers, and the state a checkpoint
keeps. A wrapper that forgets one of these silently falls back on the base class's default: the
payload counter once kept error feedback's residuals after a refused call that way. So every
method of the protocol is forwarded here, once, and a subclass overrides only what it adds
(:class:`~.error_feedback.ErrorFeedback`: the residuals; the optimizers' traffic counter: the
payload sizes).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .base import Compressor, Ctx


class Wrapper(Compressor):
    """Forward the whole compressor protocol to ``inner``."""

    def __init__(self, inner: Compressor) -> None:
        super().__init__()
        self.inner = inner

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def wire_id(self) -> int:  # type: ignore[override]
        return self.inner.wire_id

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    @property
    def lossless(self) -> bool:  # type: ignore[override]
        return self.inner.lossless

    @property
    def narrow_range(self) -> bool:  # type: ignore[override]
        return self.inner.narrow_range

    def compress(self, x: Any, key: Hashable = None, *, out: Any = None) -> tuple[Any, Ctx]:
        return self.inner.compress(x, key, out=out)

    def decompress(self, payload: Any, ctx: Ctx, *, out: Any = None) -> Any:
        return self.inner.decompress(payload, ctx, out=out)

    def payload_nbytes(self, x: Any) -> int | None:
        return self.inner.payload_nbytes(x)

    def payload_bound(self, ctx: Ctx) -> int:
        return self.inner.payload_bound(ctx)

    def stream(self, ctx: Ctx) -> int | None:
        return self.inner.stream(ctx)

    def bind(self, key: Hashable, shape: tuple[int, ...], world_size: int) -> None:
        self.inner.bind(key, shape, world_size)

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def restore(self, snapshot: Any) -> None:
        self.inner.restore(snapshot)

    def summable_section(self, payload: Any, ctx: Ctx) -> tuple[Any, str]:
        return self.inner.summable_section(payload, ctx)

    def sparse_parts(self, payload: Any, ctx: Ctx) -> tuple[Any, Any]:
        return self.inner.sparse_parts(payload, ctx)

    def params(self) -> dict[str, Any]:
        return {"inner": self.inner}

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
