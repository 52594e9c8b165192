"""The floor of any all-reduce driven from Python on p ranks, against ``MPI_Allreduce``.

Recursive doubling with bare ``MPI_Sendrecv`` and ``np.add`` (no checks, no mpicoll; ``p`` a power
of two), timed interleaved with ``MPI_Allreduce`` on the same arrays: medians of 9 samples of
2,000 calls each, the slowest rank's time per call.
"""

import time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
p, r = comm.size, comm.rank
assert p & (p - 1) == 0, "a power of two"


def timed(fn, calls=2000):
    comm.Barrier()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return comm.allreduce((time.perf_counter() - t) / calls, op=MPI.MAX)


for nbytes in (4 << 10, 16 << 10, 64 << 10):
    x = np.ones(nbytes // 4, np.float32)
    out = np.empty_like(x)
    theirs = np.empty_like(x)

    def library(x=x, out=out):
        comm.Allreduce(x, out)

    def python(x=x, out=out, theirs=theirs):
        current = x
        d = 1
        while d < p:
            peer = r ^ d
            comm.Sendrecv(current, peer, 5, theirs, peer, 5)
            if r < peer:
                np.add(current, theirs, out=out)
            else:
                np.add(theirs, current, out=out)
            current = out
            d *= 2

    samples = {"MPI_Allreduce": [], "Sendrecv + np.add": []}
    for _ in range(9):
        samples["MPI_Allreduce"].append(timed(library))
        samples["Sendrecv + np.add"].append(timed(python))
    if r == 0:
        med = {k: sorted(v)[4] * 1e6 for k, v in samples.items()}
        print(
            f"{p} ranks {nbytes >> 10:3d} KiB: MPI_Allreduce {med['MPI_Allreduce']:7.2f} us, Sendrecv + np.add "
            f"{med['Sendrecv + np.add']:7.2f} us ({med['Sendrecv + np.add'] / med['MPI_Allreduce']:.2f}x)",
            flush=True,
        )
