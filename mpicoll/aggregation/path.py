"""What every compressed all-reduce path implements: a local ``prepare`` and a collective ``run``.

``prepare`` compresses and checks this rank's own data without communicating, so the API can
run it inside the cross-rank :class:`~mpicoll.collectives.internal.Agreement`: a local failure
is then reported on every rank before any rank starts communicating. ``run`` must complete its
communication whatever happens on the way: a *peer's* payload that turns out malformed, or any
local step that raises (a decoder, a re-compression), is recorded in :class:`Prepared` by
:meth:`Prepared.guard` and the protocol goes on (with zeros); the API then raises on every rank.
Nothing hangs and no rank returns garbage. ``run`` communicates through the unvalidated entry
points of :mod:`mpicoll.collectives.internal` (or point-to-point): the API has agreed on the
arguments already, so a sub-step needs no agreement of its own.

``run`` returns the sum, or with ``prepared.average`` the mean, in :func:`acc_dtype` (float32 for
float16 input): a path divides before anything is rounded to float16, so a mean that float16
can hold never overflows on the way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import timeline
from ..collectives.internal import allgather
from ..compression import Compressor, Ctx
from ..transport import Comm

Parts = Sequence[tuple[int, ...]] | None
"""The shapes of the tensors packed one after another in a flat array (a gradient bucket), or
``None``. Paths that can use the structure (PowerSGD: one matrix per tensor) do; the others
reduce the flat array and ignore it."""


def acc_dtype(dtype: Any) -> np.dtype:
    """Where sums of ``dtype`` are kept: float32 for float16, else the dtype itself."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


def _phase(what: str) -> str:
    """The timeline's name for a guarded step: compressing, adding a peer's values, or decoding."""
    return "compress" if what.startswith("compress") else "reduce" if what.startswith("adding") else "decode"


@dataclass
class Prepared:
    """This rank's compressed data, ready for the collective part."""

    compressor: Compressor
    ctx: Ctx | None
    payload: Any = None
    #: what the path's ``run`` needs besides the payload (each path its own; never tensor shapes,
    #: which are :data:`Parts`)
    state: Any = None
    average: bool = False
    #: the compressor's :meth:`~mpicoll.compression.Compressor.stream` for this call, agreed across ranks
    stream: int | None = None
    #: ``(exception type, text)`` of every step that failed here; the API raises them on every rank
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: run by the API once every rank has succeeded: state updates that cannot be undone cheaply
    commit: Callable[[], None] | None = None
    #: a number this rank announces to every rank with the API's agreement (a payload size), -1 if none
    announce: int = -1
    #: every rank's ``announce``, in rank order, when the agreement carried them (validation on);
    #: ``None`` otherwise, and then a path that needs them exchanges them itself
    announced: Any = None

    def guard(self, what: str, step: Any, *args: Any) -> Any:
        """``step(*args)``, or ``None`` (recorded) if it raises anything: the protocol must go on."""
        try:
            with timeline.span(_phase(what), what=what):
                return step(*args)
        except Exception as exc:  # any: a peer stranded mid-protocol would wait forever
            self.errors.append((type(exc).__name__, f"{what}: {exc}"))
            return None

    def sum_decoded(self, ctx: Ctx, payloads: Iterable[tuple[str, Any]]) -> Any:
        """Decode each ``(what, payload)`` as a tensor like ``ctx`` and add them in the order given
        (rank order: the same additions on every rank), flat, in :func:`acc_dtype`. A payload that
        fails to decode is recorded (:meth:`guard`) and counts as zeros. Every payload decodes into
        one scratch array: a fresh one each faulted its pages in every time (3 x 16 MiB on 3
        ranks: about a third of sign's compute there; bench/RESULTS.md, issue 17)."""
        total = np.zeros(ctx.numel, dtype=acc_dtype(ctx.dtype))
        decode = functools.partial(self.compressor.decompress, out=np.empty(ctx.shape, dtype=ctx.dtype))
        for what, payload in payloads:
            decoded = self.guard(what, decode, payload, ctx)
            if decoded is not None:
                total += decoded.reshape(-1).astype(total.dtype, copy=False)
        return total

    def mean(self, total: Any, size: int) -> Any:
        """``total`` divided by ``size`` in place when averaging (``total`` is in :func:`acc_dtype`)."""
        if self.average:
            total /= total.dtype.type(size)
        return total


class GuardedOp:
    """A reduction op for the dense algorithms inside a path: a ``combine`` that raises is recorded in
    ``prepared`` and gives zeros, so the algorithm completes its sends and receives on every rank
    (an exception mid-ring would leave the peers waiting). One ``try`` per segment."""

    def __init__(self, op: Any, prepared: Prepared) -> None:
        self.op, self.prepared, self.name = op, prepared, op.name

    def combine(self, a: Any, b: Any, out: Any) -> None:
        try:
            self.op.combine(a, b, out)
        except Exception as exc:  # any: see the class docstring
            self.prepared.errors.append((type(exc).__name__, f"adding partial sums: {exc}"))
            out[...] = 0

    def mpi_op(self) -> Any:
        return self.op.mpi_op()


class Path:
    """Base class of the compressed all-reduce algorithms."""

    #: whether the tensor's shape (not only its element count) shapes the messages: then the
    #: API agrees on it across ranks
    uses_shape = False

    def prepare(self, comm: Comm, x: Any, compressor: Compressor, key: Hashable, parts: Parts = None,
                average: bool = False) -> Prepared:
        """Compress and check this rank's data; no communication. ``parts``: see :data:`Parts`."""
        raise NotImplementedError

    def run(self, comm: Comm, prepared: Prepared) -> Any:
        """The collective part; returns the sum or mean (``prepared.average``) in :func:`acc_dtype`."""
        raise NotImplementedError


def gather_payloads(comm: Comm, prepared: Prepared) -> tuple[Any, Any] | None:
    """Every rank's ``prepared.payload``, concatenated in rank order, and their sizes (int64).

    The sizes ride on the API's agreement when it ran (:attr:`Prepared.announced`), else they are
    gathered here first (one round). Every rank sees the same sizes and checks them against the
    compressor's bound before allocating anything, so all skip the gather together (``None``,
    recorded) when any is out of range; a payload that differs from its own announcement (never,
    short of a bug) is recorded and replaced by zeros of the announced size, so the gather stays
    consistent."""
    if prepared.announced is not None:
        sizes = prepared.announced
    else:
        sizes = allgather(comm, np.array([prepared.payload.size], dtype=np.int64)).reshape(-1)
    bound = prepared.compressor.payload_bound(prepared.ctx)
    bad = np.flatnonzero((sizes < 0) | (sizes > bound))
    if bad.size:
        prepared.errors.append(("PayloadError", f"ranks {bad.tolist()} announced payloads of {sizes[bad].tolist()} "
                                f"bytes, outside what any {prepared.compressor.name} payload of this tensor can be "
                                f"(0-{bound} bytes)"))
        return None
    payload = prepared.payload
    if payload.size != sizes[comm.rank]:
        prepared.errors.append(("PayloadError", f"rank {comm.rank} announced a payload of {sizes[comm.rank]} bytes "
                                f"but holds {payload.size}"))
        payload = np.zeros(int(sizes[comm.rank]), dtype=np.uint8)
    return allgather(comm, payload, sizes), sizes
