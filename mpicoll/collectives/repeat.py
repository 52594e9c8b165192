"""A repeated small all-reduce, planned once: the checked in-band path in a few Python steps.

Training loops and solvers call ``allreduce`` on the same few small arrays (a loss, a norm, a
metric) thousands of times. At 4 KiB the messages cost microseconds, and the full call path's
local checks, agreement bookkeeping and buffer views cost about as much again (issue 20:
``python -m mpicoll.bench.pyfloor``). So a successful checked in-band all-reduce
(:mod:`.inband`: ``auto`` or ``recursive_doubling``, a host array of at most 16 KiB, ``out`` not
given) leaves a :class:`Plan` on its communicator, keyed by shape, dtype, op and algorithm. A
later call with the same key, a plain C-contiguous ``numpy.ndarray`` and unchanged settings
(:attr:`mpicoll.config.Config.stamp`) runs the plan:

- the local checks are skipped: they depend only on the key (shape, dtype, op, algorithm), and
  they passed for it; the data-dependent ``check_finite`` is a setting, so a plan is made only
  with it off;
- the messages are the full path's, byte for byte: the same schedule, the same signature row,
  the same reserved tag. A rank running a plan and a rank on the full path (its first call with
  other arguments, say, or another collective) therefore meet as before, and a disagreement is
  judged by :func:`.validate.judge` from the same table, so every rank raises the same error, on
  the first call where it happens;
- the rank's first message is its data copied behind its own row into one buffer (a 4-16 KiB
  copy), instead of an MPI struct datatype over the caller's array, which would have to be made
  again for every new array;
- the result is computed straight into the array returned.

Timelines (which record the full path's phases), the non-blocking engine's thread (its waits poll)
and ``pinned`` settings take the full path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import timeline
from ..config import config
from ..transport import Comm
from ..transport.p2p import is_patient
from . import inband
from .ops import ReduceOp, work_dtype
from .validate import WIDTH, judge, signature_of

#: the plans one communicator keeps (distinct shapes, dtypes, ops, algorithms): a loop has a few
LIMIT = 64
_SLOT = "repeat.plans"


class Plan:
    """One planned all-reduce: its signature row, its send buffer (own row already in place) and
    the table the rows are gathered into."""

    __slots__ = ("comm", "data", "expected", "op", "row", "sent", "signature", "stamp", "table")

    def __init__(self, comm: Comm, x: np.ndarray, op: ReduceOp, signature: np.ndarray) -> None:
        self.comm, self.op, self.signature, self.stamp = comm, op, signature, config.stamp
        self.table = inband.table(comm, WIDTH)
        self.row = self.table[comm.rank]
        self.expected = signature.tobytes() * comm.size
        self.sent = np.empty(x.nbytes + signature.nbytes, dtype=np.uint8)
        self.sent[x.nbytes:] = signature.view(np.uint8)
        self.data = self.sent[:x.nbytes].view(x.dtype).reshape(x.shape)

    def run(self, x: np.ndarray) -> np.ndarray:
        """The all-reduce of ``x`` (the key's shape and dtype, C-contiguous): a new array."""
        c = self.comm
        result = np.empty(x.shape, dtype=x.dtype)
        if c.size == 1:
            result[...] = x
        else:
            self.row[...] = self.signature
            self.data[...] = x
            flat = result.reshape(-1)
            got = inband.gather_rows(c, self.table, x.reshape(-1), self.op, sent=self.sent, into=flat)
            if got is False or self.table.tobytes() != self.expected:
                judge(c, "allreduce", None, self.table, self.signature, got, inband=True)  # raises everywhere
                raise RuntimeError("allreduce: the argument check failed without an error (an mpicoll bug; "
                                   "please report it)")
            if got is not flat:  # computed in a scratch array (a rank that folds out sends it on)
                flat[...] = got
        if self.op.average and c.size > 1:
            np.divide(result, c.size, out=result)
        return result


def lookup(comm: Comm, x: Any, op: Any, algorithm: str) -> Plan | None:
    """The plan for this call, or ``None`` when it must take the full path."""
    plans = comm.cache.get(_SLOT)
    if not plans or type(x) is not np.ndarray or type(op) is not str or type(algorithm) is not str:
        return None
    plan = plans.get((x.shape, x.dtype, op, algorithm))
    if plan is None or plan.stamp != config.stamp or plan.stamp < 0 or not x.flags.c_contiguous \
            or timeline.recording() or is_patient():
        return None
    return plan


def remember(comm: Comm, x: Any, op: Any, rop: ReduceOp, algorithm: str) -> None:
    """After a successful checked in-band all-reduce of ``x`` with ``out=None``: plan repeats of it."""
    if type(x) is not np.ndarray or type(op) is not str or not x.flags.c_contiguous or work_dtype(x.dtype) != x.dtype \
            or config.stamp < 0 or config.get("check_finite") or not config.get("validate"):
        return
    plans = comm.cache.setdefault(_SLOT, {})
    key = (x.shape, x.dtype, op, algorithm)
    found = plans.get(key)
    if found is not None and found.stamp == config.stamp:  # planned already (this call had a timeline, say)
        return
    if len(plans) >= LIMIT:
        plans.clear()
    signature = signature_of("allreduce", count=x.size, dtype=x.dtype, op=rop.name, algorithm="recursive_doubling",
                             inband=True)
    plans[key] = Plan(comm, x, rop, signature)
