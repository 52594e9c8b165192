"""The argument agreement's exchange, and a small all-reduce carried in the same messages.

Every collective with ``config.validate`` on first makes every rank's signature row (see
:mod:`.validate`) known to every rank: an allgather of a few int64 per rank. This module does
that allgather itself, along the recursive-doubling schedule (non-powers of two fold the extra
ranks in and out, :mod:`.pof2`), on one tag reserved for it:

- the schedule (partners, number of rounds) depends only on the rank count, never on the
  arguments being checked, so ranks that disagree about everything still meet and learn it;
- every message is received into a buffer bounded by what an mpicoll rank of this communicator
  can send (all rows plus :data:`INBAND_BYTES`), and its true length is read from the status:
  a peer with another count can never make a rank allocate or overflow anything;
- one tag for every call, and MPI's non-overtaking order per sender and tag, match the n-th
  agreement of one rank with the n-th of another, whatever collectives they are in.

**In band.** A small all-reduce on host arrays (at most :data:`INBAND_BYTES`) travels in the same
messages: each message is the sender's rows followed by its partial result, combined on the way
in recursive doubling's order (lower group first), so the agreement and the data cost one
schedule of ``log2 p`` exchanges instead of the agreement's round trip followed by the data's
(issue 20: the check was a whole extra round trip at 4-64 KiB). The result is used only once
every rank holds every row and they agree; otherwise it is discarded and the caller raises the
usual :class:`~mpicoll.errors.MismatchError` / :class:`~mpicoll.errors.PeerError`. Whether a
rank carries data is itself a field of its row, so two ranks that agree on every row also sent
messages of the sizes each expected. The bits equal :func:`.recursive_doubling` 's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..transport import Comm
from ..transport.p2p import sendrecv_count
from .ops import ReduceOp
from .pof2 import Pof2

#: the tag of every agreement message (mpicoll's other tags start at 100 on its private ``Dup``)
TAG = 99
#: the largest all-reduce (bytes of the working array) that may ride in the agreement's messages
INBAND_BYTES = 64 * 1024
#: what the stall watchdog says a rank waits for here
STEP = "the argument check (every rank must reach it)"


def carries(x: Any, nbytes: int) -> bool:
    """Whether an all-reduce of ``x`` (``nbytes`` in the working dtype) can ride in band: a host
    (NumPy) array, not empty, at most :data:`INBAND_BYTES`."""
    return 0 < nbytes <= INBAND_BYTES and isinstance(x, np.ndarray)


def _first_rank(group: Pof2, newrank: int) -> int:
    """The lowest real rank a group member stands for (members below ``rem`` stand for two)."""
    return 2 * newrank if newrank < group.rem else newrank + group.rem


Step = tuple[int, int, "int | None", int, int, "int | None", "bool | None"]


def schedule(comm: Comm) -> list[Step]:
    """This rank's messages, in order (memoized per communicator): ``(lo, hi, dest, plo, phi,
    source, peer_first)``: send rows ``[lo, hi)`` and the data to ``dest``; receive rows
    ``[plo, phi)`` and the peer's data from ``source``; combine them when ``peer_first`` is not
    None (the peer's operand first when True). ``None`` skips a side."""
    found = comm.cache.get("inband.schedule")
    if found is not None:
        return found
    p, r = comm.size, comm.rank
    group = Pof2.of(comm)
    steps: list[Step] = []
    if r < 2 * group.rem and r % 2 == 0:  # an extra rank: hand over row and data, get everything back
        steps += [(r, r + 1, r + 1, 0, 0, None, None), (0, 0, None, 0, p, r + 1, None)]
    else:
        if r < 2 * group.rem:  # r-1's row and data folded in, r-1's data first
            steps.append((0, 0, None, r - 1, r, r - 1, True))
        for k, (partner, peer_first) in enumerate(group.partners):
            mine = (group.newrank >> k) << k
            theirs = mine ^ (1 << k)
            steps.append((_first_rank(group, mine), _first_rank(group, mine + (1 << k)), partner,
                          _first_rank(group, theirs), _first_rank(group, theirs + (1 << k)), partner, peer_first))
        if r < 2 * group.rem:  # the finished table and result back to r-1
            steps.append((0, p, r - 1, 0, 0, None, None))
    comm.cache["inband.schedule"] = steps
    return steps


def _bytes_of(comm: Comm, array: Any) -> Any:
    """``array`` viewed as bytes, memoized for the scratch arrays a loop passes again and again
    (a view costs microseconds, which is what a small all-reduce is made of)."""
    if array is None:
        return b""
    views = comm.cache.get("inband.views")
    if views is None:
        views = comm.cache["inband.views"] = {}
    found = views.get(id(array))
    if found is None or found[0] is not array:
        if len(views) > 64:
            views.clear()
        found = views[id(array)] = (array, array.view(np.uint8))
    return found[1]


def gather_rows(comm: Comm, table: np.ndarray, work: Any = None, op: ReduceOp | None = None) -> bool:
    """Fill ``table`` (one int64 row per rank, this rank's row already in place) on every rank.

    Args:
        comm: the communicator.
        table: ``(p, w)`` int64, C-contiguous; row ``comm.rank`` is this rank's signature.
        work: optionally a 1-D contiguous host array of at most :data:`INBAND_BYTES` holding this
            rank's contribution to an all-reduce; it is reduced in place with ``op`` along the way.
        op: the reduction (with ``work``).

    Returns:
        Whether every message had the length this rank expected (then ``work`` holds the
        reduction over all ranks, provided every rank also carried data of the same size, which
        the caller learns by comparing the rows).
    """
    p = comm.size
    if p == 1:
        return True
    rowbytes = table.shape[1] * 8
    data = _bytes_of(comm, work)
    nbytes = len(data)
    rows = _bytes_of(comm, table)  # (p, rowbytes)
    send = comm.scratch.get("inband.send", p * rowbytes + nbytes, np.uint8)
    recv = comm.scratch.get("inband.recv", p * rowbytes + INBAND_BYTES, np.uint8)
    ok = True
    for lo, hi, dest, plo, phi, source, peer_first in schedule(comm):
        out = send[:0]
        if dest is not None:
            head = (hi - lo) * rowbytes
            out = send[: head + nbytes]
            out[:head] = rows[lo:hi].reshape(-1)
            if nbytes:
                out[head:] = data
        got = sendrecv_count(comm, out, dest, recv if source is not None else recv[:0], source, TAG, STEP)
        if source is None:
            continue
        head = (phi - plo) * rowbytes
        if got < head:  # cannot come from an mpicoll rank of this communicator: it disagrees with everything
            ok = False
            rows[plo:phi] = 0xFF  # "failed" = -1
            continue
        rows[plo:phi] = recv[:head].reshape(phi - plo, rowbytes)
        if got != head + nbytes:  # another count, or no data where this rank sent some: the rows will say
            ok = False
        elif nbytes and ok:
            if phi - plo == p:  # the finished result, from the rank this one folded into
                work[...] = recv[head: head + nbytes].view(work.dtype)
            elif peer_first is not None:
                theirs = recv[head: head + nbytes].view(work.dtype)
                if peer_first:
                    op.combine(theirs, work, out=work)
                else:
                    op.combine(work, theirs, out=work)
    return ok
