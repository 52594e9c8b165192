"""Milliseconds per optimizer step of the 1-bit Adams against Adam, side by side in one process.

The digits MLP shape of the time-to-accuracy runs (64-1024-1024-10, 1.1 M parameters, batch 32
per rank, random data): each optimizer takes its warm-up (``--freeze`` dense steps), then its
compressed steps are timed, the three optimizers alternated over ``--rounds`` rounds::

    mpiexec -n 2 python -m mpicoll.bench.optim_step

``adam`` is ``torch.optim.Adam`` in :class:`mpicoll.torch.DistributedOptimizer` (a dense
all-reduce a step), ``onebit`` :class:`mpicoll.torch.OneBitAdam`, ``zeroone``
:class:`mpicoll.torch.ZeroOneAdam` (past its variance stage: a local step and a 1-bit
synchronization each step). In shared memory the exchange is cheap, so this shows the steps'
compute: what the issue-14 time-to-accuracy runs on the slow bed add to the wire.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def main() -> int:
    import numpy as np
    import torch
    from mpi4py import MPI

    import mpicoll.torch as mt

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--freeze", type=int, default=22, help="warm-up steps (OneBitAdam) / variance stage (0/1)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                   torch.nn.ReLU(), torch.nn.Linear(1024, 10))

    makers = {
        "adam": lambda m: mt.DistributedOptimizer(torch.optim.Adam(m.parameters(), lr=1e-3), m.named_parameters()),
        "onebit": lambda m: mt.OneBitAdam(m.parameters(), lr=1e-3, freeze_step=args.freeze),
        "zeroone": lambda m: mt.ZeroOneAdam(m.parameters(), lr=1e-3, var_freeze_step=args.freeze),
    }
    rng = torch.Generator().manual_seed(comm.rank)
    x, y = torch.randn(32, 64, generator=rng), torch.randint(0, 10, (32,), generator=rng)
    runs: dict[str, tuple[torch.nn.Module, Any]] = {}
    for name, make in makers.items():
        m = model()
        runs[name] = (m, make(m))

    def step(name: str) -> None:
        m, opt = runs[name]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    for name in runs:  # past the warm-up: the compressed steps are what is timed
        for _ in range(args.freeze + 3):
            step(name)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name in runs:
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(name)
            times[name].append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX) / args.steps * 1e3)
    if comm.rank == 0:
        print(f"# {comm.size} ranks, MLP 64-1024-1024-10, median of {args.rounds} rounds of {args.steps} steps")
        print("  ".join(f"{name} {float(np.median(t)):.1f} ms" for name, t in times.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
