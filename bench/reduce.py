"""Reduce benchmark: size is the buffer size; busbw = algbw."""

from __future__ import annotations

import numpy as np

import mpicoll
from mpicoll.transport import Comm

from .exact import count_wrong, expected, poison, values
from .harness import Case, Prepared


def prepare(comm: Comm, size: int, dtype: np.dtype, op: str, root: int) -> Prepared:
    count = size // dtype.itemsize
    x = values(count, comm.rank, op, dtype)
    at_root = comm.rank == root
    out = np.zeros(count, dtype=dtype) if at_root else None
    want = expected(count, comm.size, op, dtype) if at_root else None

    def run(algorithm: str) -> None:
        mpicoll.reduce(x, op, root, algorithm=algorithm, comm=comm, out=out)

    def wrong() -> int:
        return comm.mpi.allreduce(count_wrong(out, want))

    return Prepared(count, run, wrong, lambda: poison(out))


CASE = Case("reduce", lambda p: 1.0, prepare, has_root=True)
