"""The floor of a small all-reduce written in Python: bare mpi4py ``Sendrecv`` + ``np.add`` (one
recursive-doubling round, 2 ranks) against ``MPI_Allreduce``, side by side in one process.

No checks, no mpicoll: what any Python implementation pays at least per call::

    mpiexec -n 2 python -m mpicoll.bench.pyfloor
"""

from __future__ import annotations

import sys
import time

import numpy as np


def main() -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        raise SystemExit("run on exactly 2 ranks: mpiexec -n 2 python -m mpicoll.bench.pyfloor")
    peer = comm.rank ^ 1
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

        times: dict[str, list[float]] = {"MPI_Allreduce": [], "Sendrecv + np.add": []}
        for _ in range(9):  # alternated, median of 9 rounds of 2000 calls
            for name, fn in (("MPI_Allreduce", library), ("Sendrecv + np.add", python)):
                for _ in range(100):
                    fn()
                comm.Barrier()
                t0 = time.perf_counter()
                for _ in range(2000):
                    fn()
                times[name].append((time.perf_counter() - t0) / 2000 * 1e6)
        if comm.rank == 0:
            cells = "  ".join(f"{name} {np.median(t):.2f} us" for name, t in times.items())
            print(f"{count * 4:>6} bytes  {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
