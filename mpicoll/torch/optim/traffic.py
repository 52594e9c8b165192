"""Gradient traffic: the bytes one rank sends per all-reduce, counted from the real payload sizes.

The optimizers of this package count what they put on the wire so that a run can state its
compression over the whole run (dense warm-up included). The counts follow each path's algorithm
(ring all-reduce, ring allgather, two-phase) from the payloads actually produced; headers are
included, the 8-byte size exchanges and the argument agreement are not.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ...compression import Compressor, Ctx
from ...compression.wrapper import Wrapper


def dense_sent_bytes(nbytes: int, size: int) -> float:
    """A ring all-reduce of ``nbytes``: ``2 (p-1)/p`` of it leaves each rank."""
    return 2 * (size - 1) / size * nbytes


def compressed_sent_bytes(path: str, payloads: dict[Hashable, int], key: Hashable, rank: int, size: int) -> float:
    """Bytes this rank sent in one compressed all-reduce of ``key`` on ``path``.

    Args:
        path: the algorithm that ran (``two_phase``, ``allgather_decode``, ``sparse_allgather`` ...).
        payloads: compress key -> payload bytes this rank produced during the call.
        key: the call's key; two-phase compresses chunks under ``(key, "chunk", j)`` and the owned
            sum under ``(key, "owner")``.
    """
    if size == 1:
        return 0.0
    if path == "two_phase":  # alltoall of the chunks not ours, then a ring allgather of owner payloads
        chunks = sum(n for k, n in payloads.items() if isinstance(k, tuple) and len(k) == 3 and k[1] == "chunk"
                     and k[2] != rank)
        return chunks + (size - 1) * payloads.get((key, "owner"), 0)
    own = sum(payloads.values())
    if path in ("allgather_decode", "sparse_allgather"):  # ring allgather: p-1 payloads forwarded
        return (size - 1) * own
    return dense_sent_bytes(own, size)  # summable paths reduce the wire section like a dense array


class Counting(Wrapper):
    """Wrap a compressor (usually an ErrorFeedback) and record each payload's size by key; the rest
    of the protocol goes to the wrapped codec (:class:`~mpicoll.compression.wrapper.Wrapper`)."""

    def __init__(self, inner: Compressor) -> None:
        super().__init__(inner)
        self.payloads: dict[Hashable, int] = {}

    def compress(self, x: Any, key: Hashable = None, *, out: Any = None) -> tuple[Any, Ctx]:
        payload, ctx = self.inner.compress(x, key, out=out)
        self.payloads[key] = self.payloads.get(key, 0) + int(payload.nbytes)
        return payload, ctx

    def snapshot(self) -> Any:
        return self.inner.snapshot(), dict(self.payloads)

    def restore(self, snapshot: Any) -> None:
        inner, self.payloads = snapshot
        self.inner.restore(inner)

    def take(self) -> dict[Hashable, int]:
        """The sizes recorded since the last call, and forget them."""
        taken, self.payloads = self.payloads, {}
        return taken

    def __repr__(self) -> str:
        return repr(self.inner)
