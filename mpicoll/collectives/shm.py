"""``algorithm="shm"``: the all-reduce inside one host through an MPI-3 shared-memory window.

Every rank's input lies in a shared window (:mod:`mpicoll.transport.shared`), so ranks read each
other's data directly instead of sending it:

1. (staging) each rank copies its input into its segment of the communicator's staging window
   (skipped when the call is in place on arrays made by :func:`mpicoll.shared_empty` at the same
   place on every rank: the *zero-copy* path);
2. *one-pass reduce-scatter*: rank ``r`` reduces block ``r`` reading that block of every rank's
   segment, in rank order (``x_0 op x_1 op ... op x_{p-1}``), and writes the result into its own
   segment's block ``r``;
3. *direct-read allgather*: each rank copies the other ranks' finished blocks from their segments
   into its output.

Fences (memory sync and barrier) separate the phases and end the call, so the next call may
reuse the window. Each block is reduced by one rank in one fixed order and then copied, so every
rank ends with the same bits. Memory traffic per rank: ``n`` read and ``n/p`` written by the
reduction, ``(p-1)/p n`` copied by the allgather, plus ``n`` copied in on the staging path;
nothing goes through MPI's own buffers.

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
    window = _staging(comm, flat.nbytes)
    window.view(comm.rank, flat.dtype, flat.size)[...] = flat
    run_shm(comm, window, 0, flat.dtype, flat.size, recvbuf, op)


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
