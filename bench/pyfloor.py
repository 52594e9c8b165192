"""The floor of a small all-reduce written in Python: bare mpi4py ``Sendrecv`` + ``np.add`` (one
recursive-doubling round, 2 ranks) against ``MPI_Allreduce``, side by side in one process.

No checks, no mpicoll: what any Python implementation pays at least per call::

    mpiexec -n 2 python -m mpicoll.bench.pyfloor
"""

from __future__ import annotations

import sys

import numpy as np

from .microtime import alternated, peer_of_two, print_row


def main() -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    peer = peer_of_two(comm, "pyfloor")
    for count in (1024, 4096, 16384):
        x = np.ones(count, np.float32)
        out, theirs = np.empty_like(x), np.empty_like(x)

        def library(x: np.ndarray = x, out: np.ndarray = out) -> None:
            comm.Allreduce(x, out)

        def python(x: np.ndarray = x, out: np.ndarray = out, theirs: np.ndarray = theirs) -> None:
            comm.Sendrecv([x, MPI.BYTE], peer, 5, [theirs, MPI.BYTE], peer, 5)
            if comm.rank < peer:
                np.add(x, theirs, out=out)
            else:
                np.add(theirs, x, out=out)

        print_row(comm, x.nbytes, alternated(comm, {"MPI_Allreduce": library, "Sendrecv + np.add": python},
                                             rounds=9, repeat=2000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
