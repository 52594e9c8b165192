"""MPI_Allreduce at 4 MiB over the bed: back-to-back calls (the old probe) against a barrier before each."""

import statistics
import time

import numpy as np
from mpi4py import MPI

import mpicoll

c = MPI.COMM_WORLD
x = np.ones((4 << 20) // 4, np.float32)
out = np.empty_like(x)
mpicoll.allreduce(x, algorithm="native", out=out)
for _rep in range(2):
    c.Barrier()
    b2b = []
    for _ in range(5):
        t0 = time.perf_counter()
        mpicoll.allreduce(x, algorithm="native", out=out)
        b2b.append(time.perf_counter() - t0)
    b2b_med = c.allreduce(statistics.median(b2b), op=MPI.MAX)
    bar = []
    for _ in range(5):
        c.Barrier()
        t0 = time.perf_counter()
        mpicoll.allreduce(x, algorithm="native", out=out)
        bar.append(c.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    if c.rank == 0:
        print(
            f"back-to-back median {b2b_med * 1e3:.1f} ms (each {[round(t * 1e3) for t in b2b]}), "
            f"barrier first {statistics.median(bar) * 1e3:.1f} ms (each {[round(t * 1e3) for t in bar]})",
            flush=True,
        )
