"""Sign's compressed all-reduce of 16 MiB by both paths, timed on rank 0 (bench/RESULTS.md, issue 17:
the 3-host sign miss). Run under the network bed, optionally with MPICOLL_TIMELINE set."""

import time

import numpy as np
from mpi4py import MPI

import mpicoll
from mpicoll.compression import get

world = MPI.COMM_WORLD
x = np.random.default_rng(world.rank).standard_normal(4 << 20).astype(np.float32)  # 16 MiB
codec = get("sign")
for algorithm in ("allgather_decode", "two_phase"):
    for _ in range(2):  # warm-up
        mpicoll.compressed_allreduce(x, codec, key="k", algorithm=algorithm)
    world.Barrier()
    start = time.perf_counter()
    for _ in range(3):
        mpicoll.compressed_allreduce(x, codec, key="k", algorithm=algorithm)
    if world.rank == 0:
        print(algorithm, f"{(time.perf_counter() - start) / 3 * 1e3:.1f} ms", flush=True)
