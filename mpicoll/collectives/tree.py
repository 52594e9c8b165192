"""Pipelined binary-tree reduce and broadcast, and all-reduce as one followed by the other.

Ranks form a binary tree in heap order around the root (virtual rank ``v = (rank - root) mod p``
has children ``2v+1`` and ``2v+2``). The message is cut into pipeline segments: a node reduces
segment ``s`` (own data first, then each child's in a fixed order, so repeated calls give the
same bits) and passes it up while segment ``s+1`` is still arriving; the broadcast forwards
each segment to the children as soon as it arrives. The depth of the tree is ``log2 p``, so the
latency grows slowly with the rank count.

Cost per rank: reduce and broadcast each move ``nbytes`` per tree edge; the all-reduce result is
computed once, at the root, and copied, so all ranks end bitwise identical.
"""

from __future__ import annotations

from typing import Any

from ..backend import xp_of
from ..transport import Comm
from ..transport.p2p import irecv, isend, wait, waitall
from .ops import ReduceOp
from .partition import segments
from .pipeline import Pipeline, RecvWindow
from .registry import register


def _family(comm: Comm, root: int) -> tuple[int | None, list[int]]:
    """This rank's parent (``None`` at the root) and children, as real ranks."""
    p = comm.size
    v = (comm.rank - root) % p
    parent = None if v == 0 else ((v - 1) // 2 + root) % p
    children = [(c + root) % p for c in (2 * v + 1, 2 * v + 2) if c < p]
    return parent, children


def tree_reduce(comm: Comm, sendbuf: Any, accbuf: Any, op: ReduceOp, root: int) -> None:
    """Reduce every rank's ``sendbuf`` into ``accbuf`` at ``root``.

    ``accbuf`` is used as the accumulator on inner nodes too (its contents there are partial
    sums); leaves do not touch it. It may alias ``sendbuf``.
    """
    tag = comm.new_tag()
    parent, children = _family(comm, root)
    pipe = Pipeline.for_dtype(sendbuf.dtype)
    segs = segments(sendbuf.size, pipe.segment_elems)
    if not children:
        if parent is not None:
            waitall([isend(comm, sendbuf[lo:hi], parent, tag) for lo, hi in segs], parent, "reduce: sends up")
        elif accbuf is not sendbuf:
            accbuf[...] = sendbuf
        return
    slots = pipe.slots(comm, "tree.recv", sendbuf, ways=len(children), largest=sendbuf.size)
    windows = []
    for k, child in enumerate(children):
        def describe(i: int, k: int = k, child: int = child) -> tuple[Any, int]:
            lo, hi = segs[i]
            return slots[k * pipe.depth + i % pipe.depth, : hi - lo], child

        windows.append(RecvWindow(comm, tag, len(segs), pipe.depth, describe))
    sends = []
    for lo, hi in segs:
        acc = accbuf[lo:hi]
        for k, window in enumerate(windows):
            op.combine(sendbuf[lo:hi] if k == 0 else acc, window.take(), out=acc)
            window.release()
        if parent is not None:
            sends.append(isend(comm, acc, parent, tag))
    waitall(sends, parent, "reduce: sends up")


def tree_broadcast(comm: Comm, buf: Any, root: int) -> None:
    """Broadcast ``buf`` from ``root`` down the binary tree, segment by segment, in place."""
    tag = comm.new_tag()
    parent, children = _family(comm, root)
    pipe = Pipeline.for_dtype(buf.dtype)
    segs = segments(buf.size, pipe.segment_elems)
    if parent is None:
        waitall([isend(comm, buf[lo:hi], c, tag) for lo, hi in segs for c in children], None, "broadcast: sends down")
        return
    # Receives land in place, so all of them can be posted at once.
    recvs = [irecv(comm, buf[lo:hi], parent, tag) for lo, hi in segs]
    sends = []
    for request, (lo, hi) in zip(recvs, segs, strict=True):
        wait(request, parent, "broadcast: receive from the parent")
        sends.extend(isend(comm, buf[lo:hi], c, tag) for c in children)
    waitall(sends, None, "broadcast: sends down")


@register("allreduce", "tree")
def tree_allreduce(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp) -> None:
    """Pipelined binary-tree reduce to rank 0 followed by a pipelined broadcast."""
    tree_reduce(comm, sendbuf, recvbuf, op, root=0)
    tree_broadcast(comm, recvbuf, root=0)


@register("reduce", "tree")
def tree_reduce_to_root(comm: Comm, sendbuf: Any, recvbuf: Any | None, op: ReduceOp, root: int) -> None:
    """Pipelined binary-tree reduce; ``recvbuf`` is significant at ``root`` only."""
    if recvbuf is None:
        recvbuf = comm.scratch.get("tree.acc", sendbuf.size, sendbuf.dtype, xp_of(sendbuf))
    tree_reduce(comm, sendbuf, recvbuf, op, root)


@register("broadcast", "tree")
def tree_broadcast_from_root(comm: Comm, buf: Any, root: int) -> None:
    """Pipelined binary-tree broadcast, in place."""
    tree_broadcast(comm, buf, root)
