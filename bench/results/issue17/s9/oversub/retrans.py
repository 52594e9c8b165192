"""Under the network bed: TCP segments retransmitted and each path's time, per dense algorithm.

Each rank reads its own host's counters (``/proc/net/snmp`` is per network namespace) around
three calls of a 4 MiB all-reduce; rank 0 prints the sums over hosts and the median call.

    python -m mpicoll.bench.netbed run --hosts 8 --rate 50mbit -- \
        python bench/results/issue17/s9/oversub/retrans.py
"""

import statistics
import time

import numpy as np
from mpi4py import MPI

import mpicoll


def tcp(field: str) -> int:
    with open("/proc/net/snmp") as snmp:
        lines = [line.split() for line in snmp if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index(field)])


comm = MPI.COMM_WORLD
x = np.ones((4 << 20) // 4, np.float32)
out = np.empty_like(x)
for algo in ("ring", "recursive_doubling", "rabenseifner", "tree", "ring"):
    mpicoll.allreduce(x, algorithm=algo, out=out)
    comm.Barrier()
    before = (tcp("RetransSegs"), tcp("OutSegs"))
    times = []
    for _ in range(3):
        comm.Barrier()
        t0 = time.perf_counter()
        mpicoll.allreduce(x, algorithm=algo, out=out)
        times.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    retrans = comm.reduce(tcp("RetransSegs") - before[0], op=MPI.SUM)
    segs = comm.reduce(tcp("OutSegs") - before[1], op=MPI.SUM)
    if comm.rank == 0:
        print(f"{algo:20s} {statistics.median(times) * 1e3:9.1f} ms   retransmitted {retrans:6d} of {segs:7d} segments "
              f"({retrans / max(segs, 1):.2%})", flush=True)
