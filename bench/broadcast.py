"""Broadcast benchmark: size is the buffer size; busbw = algbw."""

from __future__ import annotations

import numpy as np

import mpicoll
from mpicoll.transport import Comm

from .exact import count_wrong, poison, values
from .harness import Case, Prepared


def prepare(comm: Comm, size: int, dtype: np.dtype, op: str, root: int) -> Prepared:
    count = size // dtype.itemsize
    want = values(count, root, "sum", dtype)
    x = want.copy() if comm.rank == root else np.zeros(count, dtype=dtype)
    out = np.zeros(count, dtype=dtype)

    def run(algorithm: str) -> None:
        mpicoll.broadcast(x, root, algorithm=algorithm, comm=comm, out=out)

    def wrong() -> int:
        return comm.mpi.allreduce(count_wrong(out, want))

    return Prepared(count, run, wrong, lambda: poison(out))


CASE = Case("broadcast", lambda p: 1.0, prepare, has_op=False, has_root=True)
