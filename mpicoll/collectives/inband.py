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
messages: each message is the sender's data (its contribution, then its partial result)
followed by its rows (up to :data:`STRUCT_BYTES` of data sent from where they lie as one MPI
struct datatype; above it as one contiguous buffer, the partial results computed straight into
its head so that only the rows are copied behind them), and combined on the
way in recursive doubling's order (lower group first), so the agreement and the data cost one
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

#: the largest all-reduce (bytes of the working array) that may ride in the agreement's messages:
#: 64 KiB. At 64 KiB riding in band made the check cost -0% instead of +20% (the rows' separate
#: round) on 2 ranks and +9% instead of +26% on 4, side by side with the tree before it
#: (bench/RESULTS.md, issue 20, evening of 2026-12-01); above it the separate round is a small part
#: of the call
INBAND_BYTES = 64 * 1024
#: the most data a message sends as an MPI struct datatype over the data and the rows where they
#: lie; a larger one goes as one contiguous buffer (MPICH packs a struct itself: at 64 KiB that cost
#: 24 us against 11 for the data alone, ``python -m mpicoll.bench.writeback``)
STRUCT_BYTES = 16 * 1024
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
    """One message of the schedule and the views it needs, made once per data size and dtype."""

    __slots__ = ("dest", "expect", "final", "first", "head", "last", "lo", "peer_first", "phead", "receive", "rows_got",
                 "rows_in", "rows_tail", "source", "theirs")

    def __init__(self, b: _Buffers, step: Step, nbytes: int, dtype: Any, first: bool, last: bool) -> None:
        lo, hi, dest, plo, phi, source, peer_first = step
        #: the rank's first message, and its data is its own contribution (rows: its own row only)
        self.first = first
        #: the rank's last step, and it receives: what it computes there is the call's result
        self.last = last
        rb = b.rowbytes
        self.dest, self.source, self.peer_first, self.lo = dest, source, peer_first, lo
        self.head = (hi - lo) * rb
        self.rows_in = b.rows[lo:hi].reshape(-1) if dest is not None else None  # contiguous: sent where it lies
        self.receive = b.recv if source is not None else b.recv[:0]
        self.phead = (phi - plo) * rb
        self.expect = nbytes + self.phead
        self.rows_got = b.rows[plo:phi]
        self.rows_tail = b.recv[nbytes: nbytes + self.phead].reshape(phi - plo, rb)
        self.theirs = b.recv[:nbytes].view(dtype) if nbytes else None
        self.final = phi - plo == len(b.rows)


class _Buffers:
    """One communicator's agreement table, receive buffer (the largest message an mpicoll rank of
    it can send), send buffer with the result array at its head, and schedule, with views memoized
    per data size (a small all-reduce is made of microseconds, and a NumPy view costs about one),
    and the MPI datatypes that send a rank's data and rows as one message from where they lie.

    Up to :data:`STRUCT_BYTES` nothing a rank sends is copied into a send buffer: writing 64 KiB
    that the other rank's core had just read cost 15 us more than writing fresh memory on this VM
    (the cache lines go back across cores), about the whole cost of the exchange (bench/RESULTS.md,
    issue 20). Above it, a rank's own contribution is copied into the send buffer once (a struct
    datatype would cost more, MPICH packing it); its partial results are computed there in the
    first place, so only the rows are copied behind them."""

    def __init__(self, comm: Comm, width: int, data_bytes: int = INBAND_BYTES, recv: Any = None) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        p = comm.size
        self.table = np.zeros((p, width), dtype=np.int64)
        self.rows = self.table.view(np.uint8)  # (p, rowbytes)
        self.rowbytes = width * 8
        # every message is received into room for the longest an mpicoll rank of this communicator
        # can send (a peer with another count must be read, not truncated: its rows tell what differs)
        self.recv = np.empty(INBAND_BYTES + p * self.rowbytes, dtype=np.uint8) if recv is None else recv
        # partial results are computed at the send buffer's head: sent with the rows behind them
        self.send = np.empty(data_bytes + p * self.rowbytes, dtype=np.uint8)
        self.result = self.send[:data_bytes]
        self.send_address = self.send.__array_interface__["data"][0]
        self.schedule = schedule(comm)
        self.plans: dict[tuple[int, Any], tuple[Any, list[_Step]]] = {}
        self.routes: dict[tuple[Any, Any, Any], Route] = {}
        self.types: dict[tuple[int, int, int, int], Any] = {}

    def plan(self, nbytes: int, dtype: Any) -> tuple[Any, list[_Step]]:
        """The result array and the steps, for ``nbytes`` of ``dtype``."""
        key = (nbytes, dtype)
        found = self.plans.get(key)
        if found is None:
            if len(self.plans) > 64:
                self.plans.clear()
            result = self.result[:nbytes].view(dtype) if nbytes else None
            n = len(self.schedule)
            found = self.plans[key] = (result, [_Step(self, step, nbytes, dtype, i == 0 and step[2] is not None,
                                                      i == n - 1 and step[5] is not None)
                                                for i, step in enumerate(self.schedule)])
        return found

    def message(self, data: Any, step: _Step) -> Any:
        """The MPI message of ``data`` (1-D contiguous host array) followed by ``step``'s rows."""
        MPI = self.MPI
        if data is None:
            return step.rows_in
        nbytes = data.nbytes
        if nbytes > STRUCT_BYTES:  # one contiguous buffer: the data at its head (already there when
            # it is this rank's partial result), the rows behind
            if data.__array_interface__["data"][0] != self.send_address:
                self.send[:nbytes].view(data.dtype).reshape(data.shape)[...] = data
            self.send[nbytes: nbytes + step.head] = step.rows_in
            return [self.send[: nbytes + step.head], MPI.BYTE]
        address = MPI.Get_address(data)
        key = (address, data.nbytes, step.lo, step.head)
        found = self.types.get(key)
        if found is None:
            if len(self.types) > 64:
                for kind in self.types.values():
                    kind.Free()
                self.types.clear()
            found = self.types[key] = MPI.Datatype.Create_struct(
                [data.nbytes, step.head], [address, MPI.Get_address(step.rows_in)], [MPI.BYTE, MPI.BYTE]).Commit()
        return [MPI.BOTTOM, 1, found]

    def close(self) -> None:
        """Free the datatypes (with the communicator: :meth:`Comm.free` closes what its cache holds)."""
        for kind in self.types.values():
            kind.Free()
        self.types.clear()


def _buffers(comm: Comm, width: int) -> _Buffers:
    found = comm.cache.get("inband")
    if found is None or found.table.shape[1] != width:
        found = comm.cache["inband"] = _Buffers(comm, width)
    return found


def private(comm: Comm, width: int, data_bytes: int) -> _Buffers:
    """Buffers of one's own (a table, a result array for ``data_bytes``), not shared with the
    communicator's other calls: for a :class:`Route` prepared with the rows it expects
    (:mod:`.repeat` 's plans). Close them when done (MPI datatypes)."""
    if not 0 <= data_bytes <= INBAND_BYTES:
        raise ValueError(f"private buffers carry 0..{INBAND_BYTES} bytes of data, not {data_bytes}")
    # the receive buffer is the communicator's own: a message is read out of it before the next
    # arrives, and a communicator's calls run one at a time (so p x 112 bytes and 64 KiB, once)
    return _Buffers(comm, width, data_bytes, recv=_buffers(comm, width).recv)


def table(comm: Comm, width: int) -> np.ndarray:
    """The communicator's agreement table: ``(p, width)`` int64, the same array every call."""
    return _buffers(comm, width).table


def gather_rows(comm: Comm, table: np.ndarray, work: Any = None, op: ReduceOp | None = None) -> Any:
    """Fill ``table`` (:func:`table`'s array, this rank's row already in place) on every rank.

    Args:
        comm: the communicator.
        table: the array :func:`table` returned; row ``comm.rank`` is this rank's signature.
        work: optionally a 1-D contiguous host array of at most :data:`INBAND_BYTES`: this rank's
            contribution to an all-reduce with ``op``, reduced along the way. It is only read.
        op: the reduction (with ``work``).

    Returns:
        ``False`` when a message had a length this rank did not expect; else ``True`` without
        ``work``, or the array holding the reduction over all ranks (a scratch array valid until
        the next call on ``comm``, or on one rank ``work`` itself), provided every rank
        carried data of the same size, which the caller learns by comparing the rows.
    """
    b = _buffers(comm, table.shape[1])
    if table is not b.table:
        raise ValueError("gather_rows needs the array inband.table(comm, width) returned")
    key = (None, None, None) if work is None else (work.shape, work.dtype, op)
    route = b.routes.get(key)
    if route is None:
        if len(b.routes) > 64:
            b.routes.clear()
        route = b.routes[key] = Route(comm, table, key[0], key[1], op)
    return route.run(work)


class Route:
    """The messages of :func:`gather_rows` for one shape, dtype and op (and optionally a ready first
    message: :mod:`.repeat`'s plans), prepared once, with what each step needs bound in advance
    (the receive spec, the views of the peer's data shaped like the caller's array, the status
    object). A checked 4 KiB all-reduce is made of a few microseconds of messages; per-call
    lookups cost about as much again (issue 20).

    Args:
        comm: the communicator.
        table: the array :func:`table` returned, or the table of ``buffers``.
        shape: the shape of the arrays :meth:`run` gets (``None``, with ``dtype`` ``None``: rows only).
        dtype: their dtype (the working dtype: nothing is widened here).
        op: the reduction.
        sent: optionally this rank's first message, ready in one array (``work``'s bytes, then
            this rank's row: :mod:`.repeat` keeps one per plan); else it is sent from where the
            data and the rows lie.
        buffers: :func:`private` buffers, with ``expected``: the table's bytes when every rank
            agrees. The route then owns the table and keeps it filled with those rows: a row
            that arrives as expected is compared, not copied (and this rank's own row is in
            place for good); one that does not is written, and the table is filled again at
            the start of the next call.
    """

    __slots__ = ("b", "byte", "comm", "dirty", "expected", "op", "result", "sent", "steps", "tag")

    def __init__(self, comm: Comm, table: np.ndarray, shape: tuple[int, ...] | None, dtype: Any,
                 op: ReduceOp | None, sent: Any = None, *, buffers: _Buffers | None = None,
                 expected: bytes | None = None) -> None:
        from mpi4py import MPI

        b = _buffers(comm, table.shape[1]) if buffers is None else buffers
        if table is not b.table:
            raise ValueError("Route needs the array inband.table(comm, width) returned, or its buffers' own")
        if (buffers is None) != (expected is None):
            raise ValueError("a Route expects rows only in private buffers, which it then keeps filled")
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize if dtype is not None else 0
        result, steps = b.plan(nbytes, dtype)
        self.b, self.comm, self.op, self.sent, self.tag = b, comm, op, sent, comm.agreement_tag
        self.byte = MPI.BYTE
        self.expected, self.dirty = expected, expected is not None  # filled at the first run
        self.result = result.reshape(shape) if result is not None else None
        rb = b.rowbytes
        self.steps = [(s, [s.receive, MPI.BYTE], [sent, MPI.BYTE] if s.first and sent is not None else None,
                       None if s.theirs is None else s.theirs.reshape(shape), MPI.Status(),
                       None if expected is None else expected[step[3] * rb: step[4] * rb])
                      for s, step in zip(steps, b.schedule, strict=True)]

    def run(self, work: Any = None, into: Any = None, quick: bool = False) -> Any:
        """As :func:`gather_rows` (``comm``, ``table``, ``op`` and ``sent`` as prepared), for
        ``work`` (C-contiguous) and ``into`` of the prepared shape and dtype, the result computed
        into ``into`` at this rank's last message when that message is a receive (else it is in
        a scratch array, which the caller copies); this rank's row already in place.
        ``into`` (a route prepared with ``expected`` only) is written only if every row arrived as
        expected: then it may be the caller's ``x`` or ``out``, which a refused call must leave
        unchanged, and the result is computed straight into it (so a result returned as ``into``
        itself means the table equals ``expected``).
        ``quick``: exchanges both ways go straight to ``MPI_Sendrecv``, without the watchdog's
        notes or the engine's polling (:mod:`.repeat` 's planned calls, where neither runs)."""
        c = self.comm
        if self.dirty:  # a private table: its rows as expected again (a refused call wrote others)
            self.b.rows.reshape(-1)[...] = np.frombuffer(self.expected, dtype=np.uint8)
            self.dirty = False
        if c.size == 1:
            return True if work is None else work
        b, tag, BYTE = self.b, self.tag, self.byte
        # what this rank sends: its own contribution, then its partial results; ``agreed``: every row
        # so far arrived as expected (a private table: they are in it already)
        current, ok, agreed = work, True, self.expected is not None
        for s, receive, message, theirs, status, want in self.steps:
            if message is None and s.dest is not None:
                message = b.message(current, s)
            if quick and s.dest is not None and s.source is not None:
                c.mpi.Sendrecv(message, s.dest, tag, receive, s.source, tag, status)
                got = status.Get_count(BYTE)
            else:
                got = sendrecv_count(c, message, s.dest, receive, s.source, tag, STEP, status)
            if s.source is None:
                continue
            if got == s.expect:
                if not (agreed and s.rows_tail.tobytes() == want):
                    agreed, self.dirty = False, self.expected is not None
                    s.rows_got[...] = s.rows_tail
                if theirs is not None and ok:
                    target = into if s.last and agreed and into is not None else self.result
                    if s.final:  # the finished result, from the rank this one folded into
                        target[...] = theirs
                    elif s.peer_first:
                        self.op.combine(theirs, current, out=target)
                    else:
                        self.op.combine(current, theirs, out=target)
                    current = target
                continue
            # another count, or no data where this rank sent some: the rows (at the tail) will say
            ok, agreed, self.dirty = False, False, self.expected is not None
            if got >= s.phead:
                s.rows_got[...] = b.recv[got - s.phead: got].reshape(s.rows_got.shape)
            else:  # cannot come from an mpicoll rank of this communicator: it disagrees with everything
                s.rows_got[...] = 0xFF  # "failed" = -1
        if not ok:
            return False
        return True if work is None else current
