"""Point-to-point ceiling: every rank sends to its right neighbour while receiving from its left.

This is exactly the traffic of one ring step, so its bandwidth is what a ring collective's
busbw can at best approach. busbw = algbw = size / time.
"""

from __future__ import annotations

import numpy as np

from mpicoll.transport import Comm

from .exact import count_wrong, poison, values
from .harness import Case, Prepared

ALGORITHMS = ["sendrecv"]


def prepare(comm: Comm, size: int, dtype: np.dtype, op: str, root: int) -> Prepared:
    count = size // dtype.itemsize
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    x = values(count, comm.rank, "sum", dtype)
    out = np.zeros(count, dtype=dtype)
    want = values(count, left, "sum", dtype)

    def run(algorithm: str) -> None:
        comm.mpi.Sendrecv(x, right, 7, out, left, 7)

    def wrong() -> int:
        return comm.mpi.allreduce(count_wrong(out, want))

    return Prepared(count, run, wrong, lambda: poison(out))


CASE = Case("sendrecv", lambda p: 1.0, prepare, has_op=False)
