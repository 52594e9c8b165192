"""Shared by the two-rank micro-measurements (``pyfloor``, ``writeback``): the rank check and an
alternated timing loop whose medians compare side by side."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def peer_of_two(comm: Any, module: str) -> int:
    """The other rank of a 2-rank job; any other size exits with the command to use."""
    if comm.Get_size() != 2:
        raise SystemExit(f"run on exactly 2 ranks: mpiexec -n 2 python -m mpicoll.bench.{module}")
    return comm.rank ^ 1


def alternated(comm: Any, calls: dict[str, Callable[[], None]], rounds: int = 7,
               repeat: int = 1000) -> dict[str, float]:
    """Median microseconds per call of each function, over ``rounds`` rounds of ``repeat`` calls
    that alternate between them (after 100 warm-up calls each round, behind a barrier)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            for _ in range(100):
                fn()
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(repeat):
                fn()
            times[name].append((time.perf_counter() - t0) / repeat * 1e6)
    return {name: float(np.median(t)) for name, t in times.items()}


def print_row(comm: Any, nbytes: int, times: dict[str, float]) -> None:
    """Rank 0 prints one line: the size and each function's median."""
    if comm.rank == 0:
        cells = "  ".join(f"{name} {t:.2f} us" for name, t in times.items())
        print(f"{nbytes:>7} bytes  {cells}", flush=True)
