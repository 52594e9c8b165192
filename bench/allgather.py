"""Allgather benchmark: size is the gathered result (p blocks); busbw = algbw * (p-1)/p."""

from __future__ import annotations

import numpy as np

import mpicoll
from mpicoll.transport import Comm

from .exact import count_wrong, poison, values
from .harness import Case, Prepared


def prepare(comm: Comm, size: int, dtype: np.dtype, op: str, root: int) -> Prepared:
    block = max(1, size // dtype.itemsize // comm.size)
    x = values(block, comm.rank, "sum", dtype)
    out = np.zeros((comm.size, block), dtype=dtype)
    want = np.stack([values(block, r, "sum", dtype) for r in range(comm.size)])

    def run(algorithm: str) -> None:
        mpicoll.allgather(x, algorithm=algorithm, comm=comm, out=out)

    def wrong() -> int:
        return comm.mpi.allreduce(count_wrong(out, want))

    return Prepared(block * comm.size, run, wrong, lambda: poison(out))


CASE = Case("allgather", lambda p: (p - 1) / p, prepare, has_op=False)
