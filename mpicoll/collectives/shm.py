"""``algorithm="shm"``: the all-reduce inside one host through an MPI-3 shared-memory window.

Ranks read each other's data in a shared window (:mod:`mpicoll.transport.shared`) instead of
sending it. Two paths:

**Zero copy**, when the call is in place on arrays made by :func:`mpicoll.shared_empty` at the
same place on every rank: the inputs already lie in the window.

1. *one-pass reduce-scatter*: rank ``r`` reduces block ``r`` reading that block of every rank's
   segment, in rank order (``x_0 op x_1 op ... op x_{p-1}``), and writes the result into its own
   segment's block ``r``;
2. *direct-read allgather*: each rank copies the other ranks' finished blocks from their segments
   into its output.

**Streamed staging** for any other host arrays: the same two steps, chunk by chunk through three
slots of :data:`CHUNK_BYTES` per rank in the communicator's staging window, so that what a rank
copies in is still in the cache when its peers read it. For chunk ``j``, in one phase between
two fences, each rank copies the finished sub-blocks of chunk ``j - 1`` into its output, reduces
its own sub-block of chunk ``j`` (its own operand read from its input, the others' from their
slots, in rank order) into its output and its slot, and copies the other sub-blocks of chunk
``j + 1`` of its input into its next slot. Three slots keep the phase's writes and reads apart.
Memory traffic per rank is what a ``Sendrecv`` of the array costs: its input read once and its
output written once, the slots staying in the cache. Copying the whole input into the window
first, then reducing, reached 0.40-0.52 of the ``Sendrecv`` line at 16-256 MiB on 2 ranks;
streamed, 0.78-0.98 (bench/RESULTS.md, issue 20, evening of 2026-12-01). The window is
``3 * CHUNK_BYTES`` per rank, however large the array.

Fences (memory sync and barrier) separate the phases and end the call, so the next call may
reuse the window. Each element is reduced by one rank in one fixed order and then copied, so
every rank ends with the same bits, and the two paths give the same bits.

**Across hosts** ``shm`` is :mod:`.hierarchical` with these steps inside each host: the buffer's
shards are laid out over each host's ranks as there; rank ``j`` of a host reduces its block from
every local segment (step 2), runs the cross-host all-reduce of its shards on that block in place
in its own segment, and after a fence every local rank copies the finished blocks (step 3).
Zero copy there too when the array comes from :func:`mpicoll.shared_empty` on that communicator
(which then shares memory per host).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..transport import Comm
from ..transport.shared import SharedWindow, window_of
from .hierarchical import cross_allreduce, hierarchy
from .ops import ReduceOp
from .partition import displacements, even_counts
from .registry import register

#: the streamed staging path's slot size (bytes per rank; three slots each): 1 MiB did best of
#: 1, 2 and 4 MiB on the development VM at 16-256 MiB (bench/results/issue20-s10/streamed_shm*.log)
CHUNK_BYTES = 1 << 20


def _staging(comm: Comm, nbytes: int) -> SharedWindow:
    """The communicator's staging window, grown (collectively: the count is agreed) to ``nbytes``."""
    window = comm.cache.get("shm.staging")
    if window is None or window.nbytes < nbytes:
        if window is not None:
            window.free()
        window = comm.cache["shm.staging"] = SharedWindow(comm, max(nbytes, 1 << 20))
    return window


def _in_place_window(comm: Comm, sendbuf: Any, recvbuf: Any) -> tuple[SharedWindow, int] | None:
    """The shared window and offset of an in-place call on shared arrays, if every rank's call is
    one at the same window and offset (agreed: one small allgather); else ``None``."""
    found = window_of(sendbuf) if sendbuf is recvbuf and isinstance(sendbuf, np.ndarray) else None
    if found is not None and (found[0].comm.size, found[0].comm.rank) != (comm.size, comm.rank):
        found = None  # a window of another group of ranks: stage instead
    mine = (found[0].serial, found[1]) if found is not None else None
    every = comm.mpi.allgather(mine)
    if mine is None or any(other != mine for other in every):
        return None
    return found


def run_shm(comm: Comm, window: SharedWindow, offset: int, dtype: Any, count: int, recvbuf: Any,
            op: ReduceOp, counts: list[int] | None = None, between: Callable[[Any], None] | None = None) -> None:
    """Phases 2-3 (see the module docstring) on ``count`` elements at ``offset`` of every rank's
    segment; the result goes to ``recvbuf`` (``None``: into this rank's segment itself).

    ``counts``: each rank's block (default: as even as possible); ``between(block)`` runs on this
    rank's reduced block, in place in its segment, before anyone copies it (the cross-host step)."""
    p, r = comm.size, comm.rank
    segs = [window.view(k, dtype, count, offset) for k in range(p)]
    counts = counts if counts is not None else even_counts(count, p)
    displs = displacements(counts)
    lo, hi = displs[r], displs[r] + counts[r]
    window.fence(comm)  # every rank's input is in place
    mine = segs[r][lo:hi]
    if r <= 1 and p >= 2:  # this rank's own block is an operand of the first combine: reduce in place
        op.combine(segs[0][lo:hi], segs[1][lo:hi], out=mine)
        for k in range(2, p):
            op.combine(mine, segs[k][lo:hi], out=mine)
    else:  # the first combine would overwrite an operand read later: accumulate privately
        acc = comm.scratch.get("shm.acc", hi - lo, mine.dtype, np)
        op.combine(segs[0][lo:hi], segs[1][lo:hi], out=acc)
        for k in range(2, p):
            op.combine(acc, segs[k][lo:hi], out=acc)
        mine[...] = acc
    if between is not None:
        between(mine)
    window.fence(comm)  # every block is reduced
    out = segs[r] if recvbuf is None else recvbuf.reshape(-1)
    for k in range(p):
        if recvbuf is None and k == r:  # already there
            continue
        start, stop = displs[k], displs[k] + counts[k]
        out[start:stop] = segs[k][start:stop]
    window.fence(comm)  # nobody reads a segment any more: the next call may write it


@register("allreduce", "shm")
def shm_allreduce(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp) -> None:
    """One-pass shared-memory all-reduce inside one host (see the module docstring)."""
    if comm.size == 1:
        if recvbuf is not sendbuf:
            recvbuf[...] = sendbuf
        return
    flat = sendbuf.reshape(-1)
    if not isinstance(flat, np.ndarray):
        raise UnsupportedError("allreduce: algorithm 'shm' reads host memory; GPU arrays go through the other "
                               "algorithms (or MPICOLL_CUDA_AWARE=0, which stages them through host memory)")
    if len(set(comm.hosts)) > 1:
        _across_hosts(comm, sendbuf, recvbuf, op)
        return
    placed = _in_place_window(comm, sendbuf, recvbuf)
    if placed is not None:
        window, offset = placed
        run_shm(comm, window, offset, flat.dtype, flat.size, None, op)
        return
    run_streamed(comm, flat, recvbuf.reshape(-1), op)


def run_streamed(comm: Comm, send: np.ndarray, recv: np.ndarray, op: ReduceOp) -> None:
    """The streamed staging path (see the module docstring) of 1-D host arrays ``send`` into
    ``recv`` (the same array, or overlapping it, for an in-place call) on one host."""
    p, r = comm.size, comm.rank
    chunk = max(1, CHUNK_BYTES // send.dtype.itemsize)
    window = _staging(comm, 3 * chunk * send.dtype.itemsize)
    slots = [[window.view(k, send.dtype, chunk, s * chunk * send.dtype.itemsize) for s in range(3)]
             for k in range(p)]
    n = send.size
    chunks = -(-n // chunk)
    # an in-place call's own operand is its output: a rank whose first combine does not read it
    # (rank 2 and up) accumulates privately, or it would overwrite the operand before reading it
    private = r >= 2 and np.may_share_memory(send, recv)
    acc = comm.scratch.get("shm.acc", chunk // p + 1, send.dtype, np) if private else None

    def bounds(j: int) -> tuple[int, list[int]]:  # chunk j's start and its sub-blocks' bounds
        m = min(chunk, n - j * chunk)
        return j * chunk, [m * k // p for k in range(p + 1)]

    def copy_in(j: int) -> None:  # the sub-blocks of chunk j the others reduce, into slot j % 3
        lo, sub = bounds(j)
        mine, slot = sub[r: r + 2], slots[r][j % 3]
        if mine[0]:
            slot[: mine[0]] = send[lo: lo + mine[0]]
        if mine[1] < sub[p]:
            slot[mine[1]: sub[p]] = send[lo + mine[1]: lo + sub[p]]

    def reduce_own(j: int) -> None:  # this rank's sub-block of chunk j, in rank order
        lo, sub = bounds(j)
        a, b = sub[r], sub[r + 1]
        if a == b:
            return
        ops = [send[lo + a: lo + b] if k == r else slots[k][j % 3][a:b] for k in range(p)]
        target = acc[: b - a] if private else recv[lo + a: lo + b]
        op.combine(ops[0], ops[1], out=target)
        for k in range(2, p):
            op.combine(target, ops[k], out=target)
        if private:
            recv[lo + a: lo + b] = target
        slots[r][j % 3][a:b] = target

    def copy_out(j: int) -> None:  # the others' finished sub-blocks of chunk j
        lo, sub = bounds(j)
        for k in range(p):
            if k != r and sub[k] < sub[k + 1]:
                recv[lo + sub[k]: lo + sub[k + 1]] = slots[k][j % 3][sub[k]: sub[k + 1]]

    copy_in(0)
    window.fence(comm)
    for j in range(chunks + 1):
        if j >= 1:
            copy_out(j - 1)
        if j < chunks:
            reduce_own(j)
        if j + 1 < chunks:
            copy_in(j + 1)
        window.fence(comm)  # chunk j reduced, chunk j - 1 copied out, chunk j + 1 copied in


def _across_hosts(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp) -> None:
    """Hierarchical, with the steps inside each host in shared memory (see the module docstring)."""
    h = hierarchy(comm)
    shard_counts, shard_displs, local_counts = h.layout(sendbuf.size)
    start = shard_displs[h.owned.start]
    step = cross_allreduce(op)
    if h.local.size == 1:  # nothing to share on this host: the cross-host step is all there is
        if recvbuf is not sendbuf:
            recvbuf.reshape(-1)[...] = sendbuf
        h.cross_steps(recvbuf.reshape(-1), shard_counts, shard_displs, step)
        return

    def cross(block: Any) -> None:
        h.cross_steps(block, shard_counts, shard_displs, step, base=start)

    placed = _in_place_window(h.local, sendbuf, recvbuf)
    if placed is not None:
        window, offset = placed
        run_shm(h.local, window, offset, sendbuf.dtype, sendbuf.size, None, op, local_counts, cross)
        return
    window = _staging(h.local, sendbuf.nbytes)
    window.view(h.local.rank, sendbuf.dtype, sendbuf.size)[...] = sendbuf
    run_shm(h.local, window, 0, sendbuf.dtype, sendbuf.size, recvbuf, op, local_counts, cross)
