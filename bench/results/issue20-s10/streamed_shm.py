# ruff: noqa: B023, RUF059  (a throw-away measurement: each lambda runs within its own iteration)
import sys
import time

import numpy as np
from mpi4py import MPI

import mpicoll

comm = MPI.COMM_WORLD
p, r = comm.size, comm.rank


def make_win(nbytes):
    win = MPI.Win.Allocate_shared(nbytes, 1, comm=comm)
    win.Lock_all(MPI.MODE_NOCHECK)
    segs = [np.frombuffer(win.Shared_query(k)[0], dtype=np.uint8) for k in range(p)]
    return win, segs


def streamed(x, out, win, segs, C):
    n = x.size
    nch = -(-n // C)
    sync, bar = win.Sync, comm.Barrier
    slots = [[segs[k][s * C * 4 : (s + 1) * C * 4].view(np.float32) for s in range(3)] for k in range(p)]

    def bounds(j):
        lo = j * C
        hi = min(n, lo + C)
        m = hi - lo
        return lo, hi, m, [(m * k) // p for k in range(p + 1)]

    B = [bounds(j) for j in range(nch)]

    def A(j):
        lo, hi, m, sub = B[j]
        a, b = sub[r], sub[r + 1]
        sl = slots[r][j % 3]
        if a:
            sl[:a] = x[lo : lo + a]
        if b < m:
            sl[b:m] = x[lo + b : hi]

    def Red(j):
        lo, hi, m, sub = B[j]
        a, b = sub[r], sub[r + 1]
        o = out[lo + a : lo + b]
        s = j % 3
        ops = [x[lo + a : lo + b] if k == r else slots[k][s][a:b] for k in range(p)]
        np.add(ops[0], ops[1], out=o)
        for k in range(2, p):
            np.add(o, ops[k], out=o)
        slots[r][s][a:b] = o

    def Cp(j):
        lo, hi, m, sub = B[j]
        s = j % 3
        for k in range(p):
            if k != r:
                a, b = sub[k], sub[k + 1]
                out[lo + a : lo + b] = slots[k][s][a:b]

    A(0)
    sync()
    bar()
    sync()
    for j in range(nch + 1):
        if j >= 1:
            Cp(j - 1)
        if j < nch:
            Red(j)
        if j + 1 < nch:
            A(j + 1)
        sync()
        bar()
        sync()


mc = mpicoll.Comm(comm) if hasattr(mpicoll, "Comm") else None
sizes = [int(a) for a in sys.argv[1:]] or [16, 64, 256]
for mib in sizes:
    n = mib * 2**20 // 4
    x = np.random.default_rng(r).random(n, dtype=np.float32)
    out = np.empty_like(x)
    ref = np.empty_like(x)
    comm.Allreduce(x, ref)
    win, segs = make_win(3 * 2**20 * 4 * 2 + 64)
    rcv = np.empty_like(x)
    V = {
        "sendrecv": lambda: comm.Sendrecv(x, (r + 1) % p, 7, rcv, (r - 1) % p, 7),
        "MPI_Allreduce": lambda: comm.Allreduce(x, out),
        "ring": lambda: mpicoll.allreduce(x, out=out, algorithm="ring"),
        "shm": lambda: mpicoll.allreduce(x, out=out, algorithm="shm"),
    }
    for C in [256 * 1024, 512 * 1024, 1024 * 1024]:
        V[f"stream{C * 4 >> 10}K"] = (lambda C: lambda: streamed(x, out, win, segs, C))(C)
    T = {k: [] for k in V}
    for rep in range(7):
        for k, f in V.items():
            comm.Barrier()
            t = time.perf_counter()
            f()
            comm.Barrier()
            T[k].append(time.perf_counter() - t)
            if k.startswith("stream") and rep == 0 and p == 2:
                assert np.array_equal(out, ref)
    win.Unlock_all()
    win.Free()
    if r == 0:
        med = {k: sorted(v)[len(v) // 2] for k, v in T.items()}
        line = med["sendrecv"]
        print(mib, "MiB", " ".join(f"{k}={n * 4 / v / 1e9:.2f}({line / v:.2f})" for k, v in med.items()), flush=True)
