"""The argument agreement's exchange, and a small all-reduce carried in the same messages.

Every collective with ``config.validate`` on first makes every rank's signature row (see
:mod:`.validate`) known to every rank: an allgather of a few int64 per rank. This module does
that allgather itself, along the recursive-doubling schedule (non-powers of two fold the extra
ranks in and out, :mod:`.pof2`), on one tag reserved for it (``Comm.agreement_tag``):

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


class _Step:
    """One message of the schedule with every view it needs, made once per data size."""

    __slots__ = (
        "dest",
        "expect",
        "final",
        "message",
        "peer_first",
        "phi",
        "plo",
        "receive",
        "rows_got",
        "rows_in",
        "rows_out",
        "rows_tail",
        "source",
        "theirs",
    )

    def __init__(self, b: _Buffers, step: Step, nbytes: int, dtype: Any) -> None:
        lo, hi, dest, plo, phi, source, peer_first = step
        rb = b.rowbytes
        self.dest, self.source, self.peer_first, self.plo, self.phi = dest, source, peer_first, plo, phi
        head = (hi - lo) * rb
        # a message is the sender's data (at the front, where the caller's working array lives) then its rows
        self.message = b.send[: nbytes + head] if dest is not None else b.send[:0]
        self.rows_out = b.send[nbytes: nbytes + head].reshape(hi - lo, rb) if dest is not None else None
        self.rows_in = b.rows[lo:hi] if dest is not None else None
        self.receive = b.recv if source is not None else b.recv[:0]
        phead = (phi - plo) * rb
        self.expect = nbytes + phead
        self.rows_got = b.rows[plo:phi]
        self.rows_tail = b.recv[nbytes: nbytes + phead].reshape(phi - plo, rb)
        self.theirs = b.recv[:nbytes].view(dtype) if nbytes else None
        self.final = phi - plo == len(b.rows)


class _Buffers:
    """One communicator's agreement table, message buffers (the largest message an mpicoll rank
    of it can send, each way) and schedule, with views memoized per data size: a small all-reduce
    is made of microseconds, and a NumPy view costs about one."""

    def __init__(self, comm: Comm, width: int) -> None:
        p = comm.size
        self.table = np.zeros((p, width), dtype=np.int64)
        self.rows = self.table.view(np.uint8)  # (p, rowbytes)
        self.rowbytes = width * 8
        self.send = np.empty(INBAND_BYTES + p * self.rowbytes, dtype=np.uint8)
        self.recv = np.empty(INBAND_BYTES + p * self.rowbytes, dtype=np.uint8)
        self.schedule = schedule(comm)
        self.plans: dict[tuple[int, Any], tuple[Any, list[_Step]]] = {}

    def plan(self, nbytes: int, dtype: Any) -> tuple[Any, list[_Step]]:
        """The working array (at the front of the send buffer) and the steps, for ``nbytes`` of ``dtype``."""
        key = (nbytes, dtype)
        found = self.plans.get(key)
        if found is None:
            if len(self.plans) > 64:
                self.plans.clear()
            work = self.send[:nbytes].view(dtype) if nbytes else None
            found = self.plans[key] = (work, [_Step(self, step, nbytes, dtype) for step in self.schedule])
        return found


def _buffers(comm: Comm, width: int) -> _Buffers:
    found = comm.cache.get("inband")
    if found is None or found.table.shape[1] != width:
        found = comm.cache["inband"] = _Buffers(comm, width)
    return found


def table(comm: Comm, width: int) -> np.ndarray:
    """The communicator's agreement table: ``(p, width)`` int64, the same array every call."""
    return _buffers(comm, width).table


def buffer(comm: Comm, count: int, dtype: Any, width: int) -> np.ndarray:
    """Where a caller puts its contribution to an in-band all-reduce (``count`` elements of
    ``dtype``): the front of the send buffer, so that nothing is copied to send it."""
    return _buffers(comm, width).plan(count * np.dtype(dtype).itemsize, np.dtype(dtype))[0]


def gather_rows(comm: Comm, table: np.ndarray, work: Any = None, op: ReduceOp | None = None) -> bool:
    """Fill ``table`` (:func:`table`'s array, this rank's row already in place) on every rank.

    Args:
        comm: the communicator.
        table: the array :func:`table` returned; row ``comm.rank`` is this rank's signature.
        work: optionally a 1-D contiguous host array of at most :data:`INBAND_BYTES` holding this
            rank's contribution to an all-reduce (best the array :func:`buffer` returned: then
            nothing is copied); it is reduced in place with ``op`` along the way.
        op: the reduction (with ``work``).

    Returns:
        Whether every message had the length this rank expected (then ``work`` holds the
        reduction over all ranks, provided every rank also carried data of the same size, which
        the caller learns by comparing the rows).
    """
    if comm.size == 1:
        return True
    b = _buffers(comm, table.shape[1])
    if table is not b.table:
        raise ValueError("gather_rows needs the array inband.table(comm, width) returned")
    nbytes = 0 if work is None else work.nbytes
    front, steps = b.plan(nbytes, None if work is None else work.dtype)
    if front is not None and work is not front:
        front[...] = work
    ok = True
    for s in steps:
        if s.rows_out is not None:
            s.rows_out[...] = s.rows_in
        got = sendrecv_count(comm, s.message, s.dest, s.receive, s.source, comm.agreement_tag, STEP)
        if s.source is None:
            continue
        if got == s.expect:
            s.rows_got[...] = s.rows_tail
            if nbytes and ok:
                if s.final:  # the finished result, from the rank this one folded into
                    front[...] = s.theirs
                elif s.peer_first is not None:
                    if s.peer_first:
                        op.combine(s.theirs, front, out=front)
                    else:
                        op.combine(front, s.theirs, out=front)
            continue
        ok = False  # another count, or no data where this rank sent some: the rows (at the tail) will say
        phead = s.rows_got.nbytes
        if got >= phead:
            s.rows_got[...] = b.recv[got - phead: got].reshape(s.rows_got.shape)
        else:  # cannot come from an mpicoll rank of this communicator: it disagrees with everything
            s.rows_got[...] = 0xFF  # "failed" = -1
    if front is not None and work is not front:
        work[...] = front
    return ok
