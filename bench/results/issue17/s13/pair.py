"""Raw MPI on the bed: a ring step against an exchange with a partner, 4 MiB per rank.

Every rank either sends to its right neighbour while receiving from its left (a ring step), or
exchanges with the partner ``rank ^ d`` (both directions at once, ``MPI_Sendrecv``), or does that
exchange one direction at a time. Times are medians of 3 after a warm-up, in units of one
message's time at the link rate (``RATE`` in bit/s, default 50e6).
"""

import os
import time

import numpy as np
from mpi4py import MPI

c = MPI.COMM_WORLD
p, r = c.size, c.rank
n = 4 << 20
x = np.ones(n // 4, np.float32)
y = np.empty_like(x)
line = n * 8 / float(os.environ.get("RATE", "50e6"))


def timed(f, reps=3):
    f()
    ts = []
    for _ in range(reps):
        c.Barrier()
        s = time.perf_counter()
        f()
        c.Barrier()
        ts.append(time.perf_counter() - s)
    return sorted(ts)[len(ts) // 2]


def exchange(d):
    c.Sendrecv(x, r ^ d, 2, y, r ^ d, 2)


def turns(d):
    if r & d:
        c.Send(x, r ^ d, 3)
        c.Recv(y, r ^ d, 3)
    else:
        c.Recv(y, r ^ d, 3)
        c.Send(x, r ^ d, 3)


res = {"shift+1": timed(lambda: c.Sendrecv(x, (r + 1) % p, 1, y, (r - 1) % p, 1))}
d = 1
while d < p:
    res[f"pair d={d}"] = timed(lambda d=d: exchange(d))
    res[f"turns d={d}"] = timed(lambda d=d: turns(d))
    d *= 2
if r == 0:
    for k, v in res.items():
        print(f"{k:12s} {v * 1e3:8.1f} ms  {v / line:5.2f} x n/B", flush=True)
