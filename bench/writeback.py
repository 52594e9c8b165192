"""What writing memory the peer has just read costs: one ``Sendrecv`` of ``x`` followed by a
write of the same size, into a fresh array or into ``x`` itself (which the peer's core just read);
and what sending ``x`` plus a 112-byte row as one MPI struct datatype costs against ``x`` alone.

On the development VM the write costs as much as the exchange at 64 KiB and up (the cache lines
travel back across cores), and MPICH packs a struct itself: why mpicoll's in-band agreement
sends data from where it lies, sums into an array no peer has read, and rides in band only up to
16 KiB. 2 ranks::

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

        row = np.ones(112, np.uint8)
        both = MPI.Datatype.Create_struct([x.nbytes, row.nbytes], [MPI.Get_address(x), MPI.Get_address(row)],
                                          [MPI.BYTE, MPI.BYTE]).Commit()
        received = np.empty(x.nbytes + row.nbytes, np.uint8)

        def alone(x: np.ndarray = x, received: np.ndarray = received) -> None:
            comm.Sendrecv([x, MPI.BYTE], peer, 6, [received, MPI.BYTE], peer, 6)

        def struct(both: MPI.Datatype = both, received: np.ndarray = received) -> None:
            comm.Sendrecv([MPI.BOTTOM, 1, both], peer, 6, [received, MPI.BYTE], peer, 6)

        times: dict[str, list[float]] = {"write a fresh array": [], "write the array just sent": [],
                                         "send x alone": [], "send x + row as a struct": []}
        for _ in range(7):  # alternated, median of 7 rounds of 1000 calls
            for name, fn in zip(times, (write_fresh, write_sent, alone, struct), strict=True):
                for _ in range(100):
                    fn()
                comm.Barrier()
                t0 = time.perf_counter()
                for _ in range(1000):
                    fn()
                times[name].append((time.perf_counter() - t0) / 1000 * 1e6)
        both.Free()
        if comm.rank == 0:
            cells = "  ".join(f"{name} {np.median(t):.1f} us" for name, t in times.items())
            print(f"{count * 4:>7} bytes  {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
