"""64 KiB on 2 ranks: data alone, rows round then data, rows+data as two messages at once, one copied message."""

import statistics
import time

import numpy as np
from mpi4py import MPI

c = MPI.COMM_WORLD.Dup()
r = c.rank
peer = 1 - r
n = 64 << 10
x = np.ones(n // 4, np.float32)
rb = np.empty_like(x)
res = np.empty_like(x)
rows = np.zeros(2 * 14, np.int64)
rrows = np.empty(2 * 14 + 8, np.int64)
big = np.empty(n + rows.nbytes, np.uint8)
rbig = np.empty_like(big)


def alone():
    c.Sendrecv(x, peer, 5, rb, peer, 5)
    np.add(x, rb, out=res)


def round_then():
    c.Sendrecv(rows, peer, 7, rrows, peer, 7)
    c.Sendrecv(x, peer, 5, rb, peer, 5)
    np.add(x, rb, out=res)


def both():
    reqs = [c.Irecv(rrows, peer, 7), c.Irecv(rb, peer, 7), c.Isend(rows, peer, 7), c.Isend(x, peer, 7)]
    MPI.Request.Waitall(reqs)
    np.add(x, rb, out=res)


def both_rows_first_wait():
    r1 = c.Irecv(rrows, peer, 7)
    r2 = c.Irecv(rb, peer, 7)
    s1 = c.Isend(rows, peer, 7)
    s2 = c.Isend(x, peer, 7)
    r1.Wait()
    r2.Wait()
    MPI.Request.Waitall([s1, s2])
    np.add(x, rb, out=res)


def copied():
    big[:n] = x.view(np.uint8)
    big[n:] = rows.view(np.uint8)
    c.Sendrecv(big, peer, 5, rbig, peer, 5)
    np.add(x, rbig[:n].view(np.float32), out=res)


fns = dict(alone=alone, round_then=round_then, both=both, both2=both_rows_first_wait, copied=copied)
res_t = {k: [] for k in fns}
for _rep in range(7):
    for k, f in fns.items():
        for _ in range(200):
            f()
        c.Barrier()
        t0 = time.perf_counter()
        for _ in range(2000):
            f()
        t = (time.perf_counter() - t0) / 2000
        res_t[k].append(c.allreduce(t, op=MPI.MAX))
if r == 0:
    base = statistics.median(res_t["alone"])
    for k, v in res_t.items():
        m = statistics.median(v)
        print(f"{k:12s} {m * 1e6:7.2f} us  {m / base:5.2f}x alone")
