"""``ErrorFeedback(inner)``: remember what compression dropped and add it back next time.

``compress(x, key)`` compresses ``x + residual[key]`` with the inner compressor and keeps
``residual[key] = (x + residual[key]) - decompress(payload)``. Over many steps nothing is lost:
the sum of everything decompressed plus the final residual equals the sum of the inputs
(Seide et al., 2014; Karimireddy et al., 2019). Residuals live per key (per rank) and survive a
checkpoint through :meth:`state_dict` / :meth:`load_state_dict`.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from ..backend import device_of, to_host, xp_of
from ..errors import ArgumentError
from .base import Compressor, Ctx


class ErrorFeedback(Compressor):
    """Wrap any compressor with error feedback; same protocol and traits as the inner one."""

    def __init__(self, inner: Compressor) -> None:
        if not isinstance(inner, Compressor) or isinstance(inner, ErrorFeedback):
            raise ArgumentError(f"ErrorFeedback needs a plain compressor, got {inner!r}")
        super().__init__()
        self.inner = inner
        self.residuals: dict[Hashable, Any] = {}

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def codec(self) -> int:  # type: ignore[override]
        return self.inner.codec

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    @property
    def lossless(self) -> bool:  # type: ignore[override]
        return self.inner.lossless

    def compress(self, x: Any, key: Hashable = None, *, out: Any = None) -> tuple[Any, Ctx]:
        corrected = self.corrected(x, key)
        payload, ctx = self.inner.compress(corrected, key, out=out)
        decoded = self.inner.decompress(payload, ctx)
        self.residuals[key] = corrected - decoded
        return payload, ctx

    def corrected(self, x: Any, key: Hashable = None) -> Any:
        """``x`` plus the residual of ``key`` (``x`` itself before the first step). Paths that
        compress in several collective steps (PowerSGD) call this, then store the residual."""
        residual = self.residuals.get(key)
        if residual is not None and device_of(residual) != device_of(x):  # e.g. restored from a checkpoint
            residual = xp_of(x).asarray(residual)
        if residual is not None and residual.shape != x.shape:
            raise ArgumentError(f"ErrorFeedback: key {key!r} had shape {residual.shape}, now {x.shape}; "
                                f"use a new key for a new tensor")
        return x if residual is None else x + residual.astype(x.dtype, copy=False)

    def decompress(self, payload: Any, ctx: Ctx, *, out: Any = None) -> Any:
        return self.inner.decompress(payload, ctx, out=out)

    def payload_nbytes(self, x: Any) -> int | None:
        return self.inner.payload_nbytes(x)

    def summable_section(self, payload: Any, ctx: Ctx) -> tuple[Any, str]:
        return self.inner.summable_section(payload, ctx)

    def sparse_parts(self, payload: Any, ctx: Ctx) -> tuple[Any, Any]:
        return self.inner.sparse_parts(payload, ctx)

    def residual(self, key: Hashable = None) -> Any:
        """The current residual of ``key`` (``None`` before its first compression)."""
        return self.residuals.get(key)

    def params(self) -> dict[str, Any]:
        return {"inner": self.inner}

    def state_dict(self) -> dict[str, Any]:
        """Residuals (as host arrays) and the inner compressor's state."""
        return {"residuals": {k: np.array(to_host(v)) for k, v in self.residuals.items()},
                "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; residuals go to the device of the first array compressed later."""
        self.residuals = {k: np.array(v) for k, v in state.get("residuals", {}).items()}
        self.inner.load_state_dict(state.get("inner", {}))

    def __repr__(self) -> str:
        return f"ErrorFeedback({self.inner!r})"

