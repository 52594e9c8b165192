"""The pipeline engine: segmented transfers overlapped with reductions.

Large messages move in segments of ``config.segment_bytes``. A :class:`RecvWindow` keeps up to
``config.pipeline_depth`` segment receives in flight, so that while one segment is being reduced
the next ones are already arriving. Each receive slot is a segment-sized piece of a reused
scratch buffer, small enough to stay in cache between the receive and the reduction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import synchronize, xp_of
from ..config import config
from ..transport import Comm
from ..transport.p2p import irecv, isend, sendrecv, wait, waitall
from .ops import ReduceOp
from .partition import segment_elements, segments


@dataclass(frozen=True)
class Pipeline:
    """Segment size (in elements) and receive depth for one call."""

    segment_elems: int
    depth: int

    @classmethod
    def for_dtype(cls, dtype: Any) -> Pipeline:
        """Read ``segment_bytes`` and ``pipeline_depth`` from the configuration."""
        itemsize = np.dtype(dtype).itemsize
        return cls(segment_elements(config.get("segment_bytes"), itemsize), config.get("pipeline_depth"))

    def slots(self, comm: Comm, name: str, like: Any, ways: int = 1, largest: int | None = None) -> Any:
        """Scratch for ``ways * depth`` receive slots, shaped (ways*depth, width).

        ``width`` is one segment, or ``largest`` (the biggest segment this call will receive) when
        smaller, so a tiny message never allocates full-size slots.
        """
        width = self.segment_elems if largest is None else max(1, min(self.segment_elems, int(largest)))
        rows = ways * self.depth
        flat = comm.scratch.get(name, rows * width, like.dtype, xp_of(like))
        return flat.reshape(rows, width)


class RecvWindow:
    """Receives items ``0 .. n-1`` in order, keeping up to ``depth`` of them posted.

    Args:
        comm: the communicator.
        tag: the message tag of this collective call.
        count: how many items will be received.
        depth: how many receives are kept in flight.
        describe: ``describe(i) -> (buffer, source)`` for item ``i``; buffers of items
            ``i`` and ``i + depth`` may share a slot, because item ``i + depth`` is posted only
            when :meth:`release` says item ``i`` is done with.
    """

    def __init__(self, comm: Comm, tag: int, count: int, depth: int,
                 describe: Callable[[int], tuple[Any, int]]) -> None:
        self._comm, self._tag, self._count, self._describe = comm, tag, count, describe
        self._posted: deque[tuple[Any, Any, int, int]] = deque()
        self._next = 0
        self._taken: Any = None
        for _ in range(min(depth, count)):
            self._post()

    def _post(self) -> None:
        buf, source = self._describe(self._next)
        self._posted.append((irecv(self._comm, buf, source, self._tag), buf, source, self._next))
        self._next += 1

    def take(self) -> Any:
        """Wait for the oldest posted item and return its buffer."""
        request, buf, source, index = self._posted.popleft()
        wait(request, source, f"receive {index + 1} of {self._count}")
        self._taken = buf
        return buf

    def release(self) -> None:
        """The last taken item's buffer may be reused: post the next item, if any.

        A GPU reduction that reads the slot may still be queued: synchronize before MPI may
        overwrite it.
        """
        if self._next < self._count:
            synchronize(self._taken)
            self._post()


def exchange_combine(comm: Comm, sendbuf: Any, keepbuf: Any, peer: int, op: ReduceOp,
                     peer_first: bool, tag: int, send_back: bool = False) -> None:
    """Send ``sendbuf`` to ``peer`` and fold the peer's message (``keepbuf.size`` elements) into ``keepbuf``.

    ``keepbuf = peer (op) keepbuf`` when ``peer_first`` else ``keepbuf (op) peer``: callers pass
    the lower group first so that every rank applies the op in the same order. ``sendbuf`` may be
    ``keepbuf`` itself (recursive doubling); then each segment's send completes before that
    segment is overwritten. Either side may be empty (a one-way fold). Segmented and pipelined;
    sends ``sendbuf.nbytes`` and receives ``keepbuf.nbytes``.

    With ``send_back`` (both partners pass it; ``sendbuf`` and ``keepbuf`` must not overlap) each
    folded segment of ``keepbuf`` goes back to ``peer`` at once, and the peer's folded segments
    land in ``sendbuf``: a two-rank all-reduce of ``sendbuf`` and ``keepbuf`` whose two phases
    overlap segment by segment, as the ring's do. Sends and receives twice as much.
    """
    pipe = Pipeline.for_dtype(keepbuf.dtype)
    if max(sendbuf.size, keepbuf.size) <= pipe.segment_elems:
        _exchange_combine_once(comm, sendbuf, keepbuf, peer, op, peer_first, tag, pipe)
        if send_back:
            sendrecv(comm, keepbuf, peer, sendbuf, peer, tag)
        return
    send_segs = segments(sendbuf.size, pipe.segment_elems)
    recv_segs = segments(keepbuf.size, pipe.segment_elems)
    sends = [isend(comm, sendbuf[lo:hi], peer, tag) for lo, hi in send_segs]
    aliased = sendbuf is keepbuf or bool(xp_of(keepbuf).shares_memory(sendbuf, keepbuf))
    slots = pipe.slots(comm, "exchange.recv", keepbuf, largest=keepbuf.size)
    back = send_segs if send_back else []

    def describe(i: int) -> tuple[Any, int]:
        if i < len(recv_segs):
            lo, hi = recv_segs[i]
            return slots[i % pipe.depth, : hi - lo], peer
        i -= len(recv_segs)  # the peer's result lands where our segment i was sent from
        wait(sends[i], peer, "send")
        lo, hi = back[i]
        return sendbuf[lo:hi], peer

    window = RecvWindow(comm, tag, len(recv_segs) + len(back), pipe.depth, describe)
    returns = []
    for i, (lo, hi) in enumerate(recv_segs):
        theirs = window.take()
        if aliased:
            wait(sends[i], peer, "send")
        _fold(op, theirs, keepbuf[lo:hi], peer_first)
        window.release()
        if send_back:
            returns.append(isend(comm, keepbuf[lo:hi], peer, tag))
    for _ in back:
        window.take()
        window.release()
    waitall(sends + returns, peer, "sends")


def exchange(comm: Comm, sendbuf: Any, recvbuf: Any, peer: int, tag: int) -> None:
    """Send ``sendbuf`` to ``peer`` while receiving ``recvbuf.size`` elements from it, segmented.

    The copy-only counterpart of :func:`exchange_combine` (an allgather step, or handing back a
    finished result): both sides go in pipeline segments, up to ``depth`` receives in flight
    straight into ``recvbuf``, so no message is longer than one segment. Either side may be empty
    (one-way); the two buffers must not overlap. The segments of a message depend only on its own
    length, so the peer's message boundaries match whichever path each side takes.
    """
    pipe = Pipeline.for_dtype(recvbuf.dtype)
    if max(sendbuf.size, recvbuf.size) <= pipe.segment_elems:
        sendrecv(comm, sendbuf, peer, recvbuf, peer, tag)
        return
    sends = [isend(comm, sendbuf[lo:hi], peer, tag) for lo, hi in segments(sendbuf.size, pipe.segment_elems)]
    recv_segs = segments(recvbuf.size, pipe.segment_elems)

    def describe(i: int) -> tuple[Any, int]:
        lo, hi = recv_segs[i]
        return recvbuf[lo:hi], peer

    window = RecvWindow(comm, tag, len(recv_segs), pipe.depth, describe)
    for _ in recv_segs:
        window.take()
        window.release()
    waitall(sends, peer, "sends")


def _fold(op: ReduceOp, theirs: Any, mine: Any, peer_first: bool) -> None:
    """``mine = theirs (op) mine`` or ``mine (op) theirs``."""
    if peer_first:
        op.combine(theirs, mine, out=mine)
    else:
        op.combine(mine, theirs, out=mine)


def _exchange_combine_once(comm: Comm, sendbuf: Any, keepbuf: Any, peer: int, op: ReduceOp,
                           peer_first: bool, tag: int, pipe: Pipeline) -> None:
    """The small-message path of :func:`exchange_combine`: one message each way, no pipeline."""
    theirs = comm.scratch.get("exchange.recv", keepbuf.size, keepbuf.dtype, xp_of(keepbuf))
    sendrecv(comm, sendbuf, peer, theirs, peer, tag)
    if keepbuf.size:
        _fold(op, theirs, keepbuf, peer_first)
