"""What writing memory the peer has just read costs: one ``Sendrecv`` of ``x`` followed by a
write of the same size, into a fresh array or into ``x`` itself (which the peer's core just read).

On the development VM the second costs as much as the exchange at 64 KiB and up (the cache lines
travel back across cores); it is why mpicoll's in-band agreement sends data from where it lies
and sums into an array no peer has read. 2 ranks::

    mpiexec -n 2 python -m mpicoll.bench.writeback
"""

from __future__ import annotations

import sys
import time

import numpy as np


def main() -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        raise SystemExit("run on exactly 2 ranks: mpiexec -n 2 python -m mpicoll.bench.writeback")
    peer = comm.rank ^ 1
    for count in (4096, 16384, 65536):  # float32: 16 KiB .. 256 KiB
        x = np.ones(count, np.float32)
        fresh, theirs = np.empty_like(x), np.empty_like(x)

        def write_fresh(x: np.ndarray = x, fresh: np.ndarray = fresh, theirs: np.ndarray = theirs) -> None:
            comm.Sendrecv([x, MPI.BYTE], peer, 5, [theirs, MPI.BYTE], peer, 5)
            np.multiply(theirs, 0.5, out=fresh)

        def write_sent(x: np.ndarray = x, theirs: np.ndarray = theirs) -> None:
            comm.Sendrecv([x, MPI.BYTE], peer, 5, [theirs, MPI.BYTE], peer, 5)
            np.multiply(theirs, 0.5, out=x)

        times: dict[str, list[float]] = {"write a fresh array": [], "write the array just sent": []}
        for _ in range(7):  # alternated, median of 7 rounds of 1000 calls
            for name, fn in zip(times, (write_fresh, write_sent), strict=True):
                for _ in range(100):
                    fn()
                comm.Barrier()
                t0 = time.perf_counter()
                for _ in range(1000):
                    fn()
                times[name].append((time.perf_counter() - t0) / 1000 * 1e6)
        if comm.rank == 0:
            cells = "  ".join(f"{name} {np.median(t):.1f} us" for name, t in times.items())
            print(f"{count * 4:>7} bytes  {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
