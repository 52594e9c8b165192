"""All-reduce benchmark: size is the buffer size; busbw = algbw * 2(p-1)/p.

Besides mpicoll's algorithms, ``--algo MPI_Allreduce`` times the bare mpi4py call
(``comm.Allreduce(x, out)`` on the same communicator: no argument check, no Python of mpicoll),
the baseline an mpicoll call is compared with side by side.
"""

from __future__ import annotations

import numpy as np

import mpicoll
from mpicoll.collectives.internal import get_op
from mpicoll.transport import Comm

from .exact import count_wrong, expected, poison, values
from .harness import Case, Prepared

MPI_ALLREDUCE = "MPI_Allreduce"
#: ``--in-place-shared``: every algorithm runs in place on an array from ``mpicoll.shared_empty``
#: (the zero-copy case of ``shm``); use an idempotent op (``-o max``) so repeated calls keep the result
IN_PLACE_SHARED = False


def prepare(comm: Comm, size: int, dtype: np.dtype, op: str, root: int) -> Prepared:
    count = size // dtype.itemsize
    x = values(count, comm.rank, op, dtype)
    want = expected(count, comm.size, op, dtype)
    if IN_PLACE_SHARED:
        shared = mpicoll.shared_empty(count, dtype, comm=comm)

        def run(algorithm: str) -> None:
            mpicoll.allreduce(shared, op, algorithm=algorithm, comm=comm, out=shared)

        def restore() -> None:
            shared[...] = x  # each algorithm starts from the inputs

        return Prepared(count, run, lambda: comm.mpi.allreduce(count_wrong(shared, want)), restore)
    out = np.empty_like(x)
    out[...] = 0  # touch the result buffer once, as an application's reused buffer would be
    rop = get_op(op)

    def run(algorithm: str) -> None:
        if algorithm == MPI_ALLREDUCE:  # the bare library call: what a hand-written mpi4py loop pays
            if dtype == np.float16:
                raise SystemExit("--algo MPI_Allreduce: MPI has no float16 sum; use -d float32")
            comm.mpi.Allreduce(x, out, op=rop.mpi_op())
            if rop.average:
                np.divide(out, comm.size, out=out)
            return
        mpicoll.allreduce(x, op, algorithm=algorithm, comm=comm, out=out)

    def wrong() -> int:
        return comm.mpi.allreduce(count_wrong(out, want))

    return Prepared(count, run, wrong, lambda: poison(out))


CASE = Case("allreduce", lambda p: 2 * (p - 1) / p, prepare, baselines=(MPI_ALLREDUCE,))
