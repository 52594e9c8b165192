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

import numpy as np

from .microtime import alternated, peer_of_two, print_row


def main() -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    peer = peer_of_two(comm, "writeback")
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

        times = alternated(comm, {"write a fresh array": write_fresh, "write the array just sent": write_sent,
                                  "send x alone": alone, "send x + row as a struct": struct})
        both.Free()
        print_row(comm, x.nbytes, times)
    return 0


if __name__ == "__main__":
    sys.exit(main())
