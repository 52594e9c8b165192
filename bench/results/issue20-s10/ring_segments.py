# ruff: noqa: B007, B023  (a throw-away measurement: each lambda runs within its own iteration)
import time

import numpy as np
from mpi4py import MPI

import mpicoll
from mpicoll.config import config

comm = MPI.COMM_WORLD
p, r = comm.size, comm.rank
for mib in [16, 64, 256]:
    n = mib * 2**20 // 4
    x = np.random.default_rng(r).random(n, dtype=np.float32)
    out = np.empty_like(x)
    rcv = np.empty_like(x)
    V = {
        "sendrecv": (None, lambda: comm.Sendrecv(x, (r + 1) % p, 7, rcv, (r - 1) % p, 7)),
        "MPI_Allreduce": (None, lambda: comm.Allreduce(x, out)),
    }
    for seg in [256 << 10, 1 << 20, 4 << 20]:
        for depth in [2, 3, 6]:
            V[f"ring{seg >> 10}Kd{depth}"] = (
                {"segment_bytes": seg, "pipeline_depth": depth},
                lambda: mpicoll.allreduce(x, out=out, algorithm="ring"),
            )
    T = {k: [] for k in V}
    for rep in range(7):
        for k, (s, f) in V.items():
            if s:
                with config.override(**s) if hasattr(config, "override") else config.set(**s):
                    f()  # warm
                    comm.Barrier()
                    t = time.perf_counter()
                    f()
                    comm.Barrier()
                    T[k].append(time.perf_counter() - t)
            else:
                comm.Barrier()
                t = time.perf_counter()
                f()
                comm.Barrier()
                T[k].append(time.perf_counter() - t)
    if r == 0:
        med = {k: sorted(v)[len(v) // 2] for k, v in T.items()}
        line = med["sendrecv"]
        print(mib, "MiB", " ".join(f"{k}={n * 4 / v / 1e9:.2f}({line / v:.2f})" for k, v in med.items()), flush=True)
