"""What every compressed all-reduce path implements: a local ``prepare`` and a collective ``run``.

``prepare`` compresses and checks this rank's own data without communicating, so the API can
run it inside the cross-rank :class:`~mpicoll.collectives.validate.Agreement`: a local failure
is then reported on every rank before any rank starts communicating. ``run`` must complete its
communication even when a *peer's* payload turns out malformed: it records the
:class:`~mpicoll.errors.PayloadError` in :class:`Prepared` and goes on (with zeros), and the API
raises it on every rank afterwards. Nothing hangs and no rank returns garbage.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import timeline
from ..compression import Compressor, Ctx
from ..errors import PayloadError
from ..transport import Comm

Parts = Sequence[tuple[int, ...]] | None
"""The shapes of the tensors packed one after another in a flat array (a gradient bucket), or
``None``. Paths that can use the structure (PowerSGD: one matrix per tensor) do; the others
reduce the flat array and ignore it."""


@dataclass
class Prepared:
    """This rank's compressed data, ready for the collective part."""

    compressor: Compressor
    ctx: Ctx
    payload: Any = None
    parts: Any = None
    errors: list[str] = field(default_factory=list)

    def decode(self, what: str, decode: Any, *args: Any) -> Any:
        """``decode(*args)``, or ``None`` (recorded) if the payload is malformed."""
        try:
            with timeline.span("decode", payload=what):
                return decode(*args)
        except PayloadError as exc:
            self.errors.append(f"{what}: {exc}")
            return None


class Path:
    """Base class of the compressed all-reduce algorithms."""

    def prepare(self, comm: Comm, x: Any, compressor: Compressor, key: Hashable, parts: Parts = None) -> Prepared:
        """Compress and check this rank's data; no communication. ``parts``: see :data:`Parts`."""
        raise NotImplementedError

    def run(self, comm: Comm, prepared: Prepared) -> Any:
        """The collective part; returns the sum (not averaged)."""
        raise NotImplementedError
