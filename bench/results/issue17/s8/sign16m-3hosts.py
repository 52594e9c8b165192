import time, numpy as np
from mpi4py import MPI
import mpicoll
from mpicoll.compression import get
w = MPI.COMM_WORLD
x = np.random.default_rng(w.rank).standard_normal(4 << 20).astype(np.float32)  # 16 MiB
c = get("sign")
for algo in ("allgather_decode", "two_phase"):
    for _ in range(2):
        mpicoll.compressed_allreduce(x, c, key="k", algorithm=algo)
    w.Barrier(); t0 = time.perf_counter()
    for _ in range(3):
        mpicoll.compressed_allreduce(x, c, key="k", algorithm=algo)
    dt = (time.perf_counter() - t0) / 3
    if w.rank == 0: print(algo, f"{dt*1e3:.1f} ms", flush=True)
