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
from .wrapper import Wrapper


class ErrorFeedback(Wrapper):
    """Wrap any compressor with error feedback; same protocol and traits as the inner one
    (forwarded by :class:`~.wrapper.Wrapper`; only the residuals are added here)."""

    def __init__(self, inner: Compressor) -> None:
        if not isinstance(inner, Compressor) or isinstance(inner, ErrorFeedback):
            raise ArgumentError(f"ErrorFeedback needs a plain compressor, got {inner!r}")
        super().__init__(inner)
        self.residuals: dict[Hashable, Any] = {}
        #: key -> (shape, world size) of the compressed all-reduces its residuals come from
        self.bindings: dict[Hashable, tuple[tuple[int, ...], int]] = {}

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

    def bind(self, key: Hashable, shape: tuple[int, ...], world_size: int) -> None:
        """Refuse to go on with residuals kept for another tensor shape or number of ranks.

        A residual is this rank's share of what compression has not delivered yet: restored in a
        job of another size, the missing ranks' shares are silently lost (or doubled); kept for a
        reshaped tensor, it is added to the wrong elements. Compressed collectives call this
        before compressing, inside their cross-rank agreement, so every rank refuses together.
        """
        now = (tuple(int(d) for d in shape), int(world_size))
        bound = self.bindings.get(key)
        if bound is not None and bound != now:
            raise ArgumentError(f"ErrorFeedback: key {key!r} holds residuals of a tensor of shape {bound[0]} "
                                f"all-reduced over {bound[1]} ranks; this call is shape {now[0]} over {now[1]} "
                                f"ranks. Use a new key for a new tensor, resume a checkpoint with the number of "
                                f"ranks that saved it, or drop the residuals (load_state_dict({{}})).")
        self.bindings[key] = now

    def snapshot(self) -> Any:
        return dict(self.residuals), dict(self.bindings), self.inner.snapshot()

    def restore(self, snapshot: Any) -> None:
        self.residuals, self.bindings, inner = snapshot
        self.inner.restore(inner)

    def residual(self, key: Hashable = None) -> Any:
        """The current residual of ``key`` (``None`` before its first compression)."""
        return self.residuals.get(key)

    def state_dict(self) -> dict[str, Any]:
        """Residuals (as host arrays), the shape and number of ranks each was made with, and the
        inner compressor's state."""
        return {"residuals": {k: np.array(to_host(v)) for k, v in self.residuals.items()},
                "bindings": {k: {"shape": list(shape), "world_size": size}
                             for k, (shape, size) in self.bindings.items()},
                "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any], *, world_size: int | None = None) -> None:
        """Restore :meth:`state_dict`; residuals go to the device of the first array compressed later.

        Residuals saved by a job of another number of ranks are refused: here when ``world_size``
        is given, else by the first compressed all-reduce of their key (on every rank at once).
        """
        bindings = {k: (tuple(int(d) for d in v["shape"]), int(v["world_size"]))
                    for k, v in state.get("bindings", {}).items()}
        others = sorted({size for _, size in bindings.values() if world_size is not None and size != world_size})
        if others:
            raise ArgumentError(f"ErrorFeedback: these residuals were saved by a job of {others[0]} ranks, this one "
                                f"has {world_size}: restoring them would lose or double the other ranks' shares. "
                                f"Resume with {others[0]} ranks, or start without residuals.")
        self.residuals = {k: np.array(v) for k, v in state.get("residuals", {}).items()}
        self.bindings = bindings
        self.inner.load_state_dict(state.get("inner", {}))

    def __repr__(self) -> str:
        return f"ErrorFeedback({self.inner!r})"

