"""Repeated all-reduces, planned once: the checked call path in a few Python steps.

Training loops and solvers call ``allreduce`` on the same arrays (a loss, a norm, a metric, a
gradient bucket) thousands of times. At 4-64 KiB the messages cost microseconds, and the full
call path's local checks, agreement bookkeeping and buffer views cost about as much again (issue
20: ``python -m mpicoll.bench.pyfloor``). So a checked all-reduce on plain NumPy arrays, once
agreed, leaves a :class:`Plan` on its communicator, keyed by shape, dtype, op and algorithm. A
later call with the same key, a plain C-contiguous ``numpy.ndarray`` and unchanged settings
(:attr:`mpicoll.config.Config.stamp`) runs the plan, with ``out`` not given, ``out=x`` or
another plain array of the same shape and dtype:

- the local checks are skipped: they depend only on the key, and they passed for it; the
  data-dependent ``check_finite`` is a setting, so a plan is made only with it off;
- the messages are the full path's, byte for byte: the same schedule, the same signature row,
  the same reserved tag. A rank running a plan and a rank on the full path (its first call with
  other arguments, say, or another collective) therefore meet as before, and a disagreement is
  judged by :func:`.validate.judge` from the same table, so every rank raises the same error, on
  the first call where it happens;
- a small call (:mod:`.inband`: at most 64 KiB, ``auto`` or ``recursive_doubling``) sends its
  first message as its data copied behind its own row into one buffer (a copy of at most 64 KiB), instead
  of an MPI struct datatype over the caller's array, which would have to be made again for
  every new array; a larger one runs the agreement's small round, then the algorithm ``auto``
  chose the first time (or the one named);
- the result is computed straight into the array returned, ``x`` or ``out`` included, where this
  rank's last message is a receive (in band, when the table is complete; the extra ranks a
  non-power of two folds in end on a send, and copy from scratch): they are written only once
  every row agreed, so a refused call changes nothing, as on the full path;
- the messages of a call riding in band are sent by an :class:`.inband.Route` prepared with the
  plan (the same messages as :func:`.inband.gather_rows`, with each step's MPI call and views
  bound once).

:func:`mpicoll.allreduce` looks its plan up first, before the stall watchdog's and the timeline's
decorator, and runs it there when neither has anything to do (:func:`fast`); the messages are
the same, only Python steps are saved.

With validation off (``MPICOLL_VALIDATE=0``) a plan skips the local checks and runs the
algorithm: the same saving, no agreement. Timelines (which record the full path's phases), the
non-blocking engine's thread (its waits poll) and ``pinned`` settings take the full path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import timeline
from ..config import config
from ..transport import Comm
from ..transport.comm import existing_default as _default_comm
from ..transport.p2p import is_patient
from ..transport.watchdog import refine
from . import inband
from .ops import ReduceOp, work_dtype
from .validate import WIDTH, exchange, judge, signature_of

#: the plans one communicator keeps (distinct shapes, dtypes, ops, algorithms): a loop has a few
LIMIT = 64
#: what they may hold in all, about: each keeps its own table and its expected rows (as one bytes
#: object and as slices per message, compared as bytes: a memoryview compares 0.3 us slower),
#: ``3 p`` rows of 112 bytes (2.8 MB at 8192 ranks), and a send buffer of at most 64 KiB and the rows
PLAN_BYTES = 64 << 20


def limit(size: int) -> int:
    """How many plans a communicator of ``size`` ranks keeps: :data:`LIMIT`, fewer (at least 4)
    where their tables would pass :data:`PLAN_BYTES`."""
    return max(4, min(LIMIT, PLAN_BYTES // (3 * size * WIDTH * 8 + inband.INBAND_BYTES)))
#: where a planned call's result goes: a new array, ``x`` itself, the caller's ``out``
NEW, IN_PLACE, OUT = 0, 1, 2
_SLOT = "repeat.plans"


class Plan:
    """One planned all-reduce: its signature row (``None`` with validation off), the table the rows
    are gathered into, and either its send buffer (data riding in band, own row already in place)
    or its algorithm (run after the agreement's own small round, for calls too large to ride in
    band or unchecked)."""

    __slots__ = ("algo", "buffers", "comm", "data", "expected", "name", "op", "quiet", "route", "sent", "signature",
                 "stamp", "table")

    def __init__(self, comm: Comm, x: np.ndarray, op: ReduceOp, signature: np.ndarray | None, name: str,
                 algo: Any, stamp: int) -> None:
        if signature is None and algo is None:
            raise ValueError("a plan without an agreement needs an algorithm (only checked calls ride in band)")
        self.comm, self.op, self.signature, self.stamp = comm, op, signature, stamp
        #: no stall watchdog to run the call under (``timeout`` is a setting: it holds while ``stamp`` does)
        self.quiet = config.get("timeout") <= 0
        self.name, self.algo = name, algo
        self.sent = self.data = self.table = self.expected = self.route = self.buffers = None
        if signature is None:  # validation off: no agreement to run
            return
        # a table of its own, kept filled with the rows every rank sends when they agree: the
        # route compares the rows that arrive instead of copying them (see inband.Route)
        self.buffers = inband.private(comm, WIDTH, x.nbytes if algo is None else 0)
        self.table = self.buffers.table
        self.expected = signature.tobytes() * comm.size
        if algo is None:
            self.sent = np.empty(x.nbytes + signature.nbytes, dtype=np.uint8)
            self.sent[x.nbytes:] = signature.view(np.uint8)
            self.data = self.sent[:x.nbytes].view(x.dtype).reshape(x.shape)
            self.route = inband.Route(comm, self.table, x.shape, x.dtype, op, self.sent, buffers=self.buffers,
                                      expected=self.expected)
        else:  # the agreement's rows only
            self.route = inband.Route(comm, self.table, None, None, None, buffers=self.buffers,
                                      expected=self.expected)

    def close(self) -> None:
        """Free what the plan holds in MPI (its buffers' datatypes)."""
        if self.buffers is not None:
            self.buffers.close()

    def run(self, x: np.ndarray, out: np.ndarray | None, kind: int) -> np.ndarray:
        """The all-reduce of ``x`` (the key's shape and dtype, C-contiguous) into a new array
        (``kind`` :data:`NEW`), into ``x`` (:data:`IN_PLACE`) or into ``out`` (:data:`OUT`)."""
        c = self.comm
        try:  # what may fail before the first message (a result too large to allocate, say)
            result = np.empty(x.shape, dtype=x.dtype) if kind == NEW else x if kind == IN_PLACE else out
            if self.data is not None:
                self.data[...] = x
        except Exception as error:
            if self.signature is not None:  # the peers must hear of it, as from the full path's Agreement
                exchange(c, "allreduce", error)
            raise
        if self.algo is None:  # the data rides in the agreement's messages
            # the caller's arrays are written only once every row agreed (a refused call changes nothing):
            # the route computes into ``result`` only where every row arrived as expected
            got = self.route.run(x, result, quick=self.quiet)
            if got is not result:  # not checked in the route (this rank's last message was a send, or one rank)
                self._agreed(got)
                result[...] = got
            if self.op.average and c.size > 1:  # as the full path's in-band branch
                np.divide(result, c.size, out=result)
            return result
        refine(self.name)  # for the watchdog's report, as the full path's resolve does
        if self.signature is not None:  # the agreement's round, then the algorithm (in place: x twice)
            self._agreed(self.route.run(quick=self.quiet))
        send = x.reshape(-1)
        self.algo(c, send, send if kind == IN_PLACE else result.reshape(-1), self.op)
        if self.op.average:  # as run_allreduce, on one rank too
            np.divide(result, c.size, out=result)
        return result

    def _agreed(self, got: Any) -> None:
        """Raise on every rank unless every rank's row equals this one (:func:`.validate.judge`)."""
        if got is False or self.table.tobytes() != self.expected:
            judge(self.comm, "allreduce", None, self.table, self.signature, got, inband=self.algo is None)
            raise RuntimeError("allreduce: the argument check failed without an error (an mpicoll bug; "
                               "please report it)")


class _Plans(dict):
    """One communicator's plans by key; :meth:`close` (with the communicator, or at :data:`LIMIT`)
    frees what they hold in MPI and forgets them."""

    def close(self) -> None:
        for plan in self.values():
            plan.close()
        self.clear()


def _kind(x: Any, out: Any, op: Any, algorithm: Any) -> int | None:
    """How a call with these arguments can run from a plan (:data:`NEW`, :data:`IN_PLACE`,
    :data:`OUT`), or ``None`` when only the full path can judge them (``op`` or ``algorithm`` not a
    string; ``x`` not a plain C-contiguous ndarray; ``out`` of another type, shape or dtype,
    non-contiguous, read-only or overlapping ``x``). Each flag costs an attribute lookup of about
    0.06 us, so they are read once, the commonest case first."""
    if type(x) is not np.ndarray or type(op) is not str or type(algorithm) is not str:
        return None
    xf = x.flags
    if not xf.c_contiguous:
        return None
    if out is None:
        return NEW
    if out is x:
        return IN_PLACE if xf.writeable else None
    if type(out) is not np.ndarray:
        return None
    of = out.flags
    if not of.writeable or not of.c_contiguous or out.shape != x.shape or out.dtype != x.dtype:
        return None
    # two arrays that each own their memory cannot overlap (the common case; may_share_memory costs more)
    if not (of.owndata and xf.owndata) and np.may_share_memory(out, x):
        return None
    return OUT


def lookup(comm: Comm, x: Any, op: Any, algorithm: str, out: Any, stamp: int) -> tuple[Plan, int] | None:
    """The plan for this call and how to run it (see :meth:`Plan.run`), or ``None`` when it must
    take the full path (``stamp``: :attr:`~mpicoll.config.Config.stamp` at the call's start)."""
    plans = comm.cache.get(_SLOT)
    if not plans or stamp < 0:
        return None
    kind = _kind(x, out, op, algorithm)
    if kind is None:
        return None
    plan = plans.get((x.shape, x.dtype, op, algorithm))
    if plan is None or plan.stamp != stamp or timeline.recording() or is_patient():
        return None
    return plan, kind


def fast(comm: Any, x: Any, op: Any, algorithm: Any, out: Any) -> Any:
    """The public :func:`~mpicoll.allreduce` 's first step: run the call from its plan and return
    the result where nothing else has to happen around it, else :data:`MISS` (then the call takes
    the full path, watched, which looks the plan up again).

    Nothing else has to happen when ``comm`` is an existing :class:`Comm` (or ``None`` with the
    default one made: the first use of a communicator is collective and must be watched), the
    plan was made with the stall watchdog off (a setting, so it holds while the plan's stamp
    does), and :func:`lookup` finds it (no timeline, not the engine's thread). The decorator
    around the full path costs about 0.5 us, a tenth of a checked 4 KiB call (issue 20)."""
    c = _default_comm() if comm is None else comm
    if not isinstance(c, Comm):
        return MISS
    found = lookup(c, x, op, algorithm, out, config.stamp)
    if found is None or not found[0].quiet:
        return MISS
    return found[0].run(x, out, found[1])


#: :func:`fast` 's answer when the call must take the full path
MISS = object()


def remember(comm: Comm, x: Any, out: Any, op: Any, rop: ReduceOp, algorithm: str, name: str, algo: Any,
             stamp: int) -> None:
    """After an all-reduce of ``x`` into ``out`` (as the caller passed them) was agreed, or checked
    locally with validation off (``algorithm`` as the caller passed it, ``name`` and ``algo`` what
    it resolved to; ``algo`` ``None`` when the data rode in band; ``stamp``:
    :attr:`~mpicoll.config.Config.stamp` at the call's start): plan repeats of it, unless a setting
    changed meanwhile (then the call's decisions may mix old and new values)."""
    if stamp < 0 or config.stamp != stamp or _kind(x, out, op, algorithm) is None or not x.size \
            or work_dtype(x.dtype) != x.dtype or config.get("check_finite"):
        return
    plans = comm.cache.get(_SLOT)
    if plans is None:
        plans = comm.cache[_SLOT] = _Plans()
    key = (x.shape, x.dtype, op, algorithm)
    found = plans.get(key)
    if found is not None and found.stamp == stamp:  # planned already (this call had a timeline, say)
        return
    if len(plans) >= limit(comm.size):
        plans.close()
    checked = config.get("validate")
    if algo is None and not checked:  # cannot happen (only checked calls ride in band): plan nothing
        return
    signature = None if not checked else \
        signature_of("allreduce", count=x.size, dtype=x.dtype, op=rop.name, algorithm=name, inband=algo is None)
    if found is not None:  # a stale plan (settings changed since): replaced
        found.close()
    plans[key] = Plan(comm, x, rop, signature, name, algo, stamp)
