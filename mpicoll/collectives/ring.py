"""Ring algorithms: reduce-scatter, allgather, and all-reduce as one followed by the other.

The buffer is cut into one block per rank. Steps are numbered globally: steps ``0 .. p-2`` are
the reduce-scatter, steps ``p-1 .. 2p-3`` the allgather. At step ``t`` rank ``r`` sends block
``(r-t-1) mod p`` to its right neighbour and receives block ``(r-t-2) mod p`` from its left one;
after the reduce-scatter rank ``r`` holds the finished block ``r``.

Every block is cut into pipeline segments, and the schedule runs segment by segment: segment
``s`` of step ``t+1`` is sent as soon as segment ``s`` of step ``t`` has arrived (and been
reduced), so transfers of later segments overlap the reduction of earlier ones, and steps
overlap each other. Each block is reduced along one chain of ranks and then copied, so all
ranks end with bitwise identical results.

Cost per rank: all-reduce sends ``2(p-1)/p * nbytes`` in ``2(p-1)`` steps; reduce-scatter and
allgather half of that each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backend import xp_of
from ..transport import Comm
from ..transport.p2p import isend, wait, waitall
from .ops import ReduceOp
from .partition import displacements, even_counts, segments
from .pipeline import Pipeline, RecvWindow
from .registry import register


def run_ring(comm: Comm, src: Any, dst: Any, op: ReduceOp | None, counts: Sequence[int],
             steps: range, first_send: Any, own_out: Any = None) -> None:
    """Run ring steps ``steps`` (global numbering, see the module docstring).

    Args:
        comm: the communicator.
        src: this rank's contribution, laid out like ``dst`` (read by reduce-scatter steps).
        dst: the full-size working buffer; received blocks land here.
        op: the reduction (unused by allgather steps).
        counts: elements per block, one block per rank.
        steps: which global steps to run.
        first_send: the data of the block sent at the first step of ``steps``.
        own_out: where block ``r``'s final reduction goes, if not into ``dst``.
    """
    p, r = comm.size, comm.rank
    right, left = (r + 1) % p, (r - 1) % p
    tag = comm.new_tag()
    pipe = Pipeline.for_dtype(dst.dtype)
    displs = displacements(counts)
    slots = pipe.slots(comm, "ring.recv", dst, largest=max(counts)) if steps.start < p - 1 else None

    def recv_block(t: int) -> int:
        return (r - t - 2) % p

    def target(block: int, lo: int, hi: int) -> Any:
        if block == r and own_out is not None:
            return own_out[lo:hi]
        return dst[displs[block] + lo: displs[block] + hi]

    items = [(t, lo, hi) for t in steps for lo, hi in segments(counts[recv_block(t)], pipe.segment_elems)]
    # Sends still in flight, by (block, segment start): a receive into that part of dst waits
    # for them first (MPI forbids touching a send buffer before its send completes).
    in_flight: dict[tuple[int, int], Any] = {}
    first_block = (r - steps.start - 1) % p
    for lo, hi in segments(counts[first_block], pipe.segment_elems):
        in_flight[(first_block, lo)] = isend(comm, first_send[lo:hi], right, tag)

    def describe(i: int) -> tuple[Any, int]:
        t, lo, hi = items[i]
        if t < p - 1:
            return slots[i % pipe.depth, : hi - lo], left
        block = recv_block(t)
        pending = in_flight.pop((block, lo), None)
        if pending is not None:
            wait(pending, right, "send to the right neighbour")
        return target(block, lo, hi), left

    window = RecvWindow(comm, tag, len(items), pipe.depth, describe)
    for t, lo, hi in items:
        block = recv_block(t)
        received = window.take()
        out = target(block, lo, hi)
        if t < p - 1:
            start = displs[block]
            op.combine(received, src[start + lo: start + hi], out=out)
        window.release()
        if t + 1 < steps.stop:
            previous = in_flight.pop((block, lo), None)
            if previous is not None:
                wait(previous, right, "send to the right neighbour")
            in_flight[(block, lo)] = isend(comm, out, right, tag)
    waitall(list(in_flight.values()), right, "sends to the right neighbour")


@register("allreduce", "ring")
def ring_allreduce(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp) -> None:
    """Pipelined ring all-reduce (reduce-scatter + allgather); bandwidth-optimal for large messages."""
    p = comm.size
    if p == 1:
        recvbuf[...] = sendbuf
        return
    counts = even_counts(sendbuf.size, p)
    first = (comm.rank - 1) % p
    start = displacements(counts)[first]
    run_ring(comm, sendbuf, recvbuf, op, counts, range(0, 2 * p - 2), sendbuf[start: start + counts[first]])


@register("reduce_scatter", "ring")
def ring_reduce_scatter(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp, counts: Sequence[int]) -> None:
    """Pipelined ring reduce-scatter: rank r receives block r of the reduction."""
    p = comm.size
    if p == 1:
        recvbuf[...] = sendbuf
        return
    work = comm.scratch.get("ring.work", sendbuf.size, sendbuf.dtype, xp_of(sendbuf))
    first = (comm.rank - 1) % p
    start = displacements(counts)[first]
    run_ring(comm, sendbuf, work, op, counts, range(0, p - 1), sendbuf[start: start + counts[first]],
             own_out=recvbuf)


@register("allgather", "ring")
def ring_allgather(comm: Comm, sendbuf: Any, recvbuf: Any, counts: Sequence[int]) -> None:
    """Pipelined ring allgather: block r of ``recvbuf`` comes from rank r."""
    p, r = comm.size, comm.rank
    start = displacements(counts)[r]
    recvbuf[start: start + counts[r]] = sendbuf
    if p > 1:
        run_ring(comm, recvbuf, recvbuf, None, counts, range(p - 1, 2 * p - 2), sendbuf)
