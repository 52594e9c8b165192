"""Reduce-scatter benchmark: size is the whole input (p blocks); busbw = algbw * (p-1)/p."""

from __future__ import annotations

import numpy as np

import mpicoll
from mpicoll.collectives.internal import displacements, even_counts
from mpicoll.transport import Comm

from .exact import count_wrong, expected, poison, values
from .harness import Case, Prepared


def prepare(comm: Comm, size: int, dtype: np.dtype, op: str, root: int) -> Prepared:
    count = size // dtype.itemsize
    counts = even_counts(count, comm.size)
    start = displacements(counts)[comm.rank]
    x = values(count, comm.rank, op, dtype)
    out = np.zeros(counts[comm.rank], dtype=dtype)
    want = expected(count, comm.size, op, dtype)[start: start + counts[comm.rank]]

    def run(algorithm: str) -> None:
        mpicoll.reduce_scatter(x, op, algorithm=algorithm, comm=comm, out=out)

    def wrong() -> int:
        return comm.mpi.allreduce(count_wrong(out, want))

    return Prepared(count, run, wrong, lambda: poison(out))


CASE = Case("reduce_scatter", lambda p: (p - 1) / p, prepare)
