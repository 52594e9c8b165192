"""``mpicoll-bench soak``: thousands of all-reduces of mixed sizes, dtypes and algorithms.

Every call's result is checked against the exact answer (small-integer inputs), and the resident
memory of every rank is read from ``/proc/self/statm`` after a warm-up pass over every
combination and again at the end: leaks show up as growth. The sequence of (size, dtype,
algorithm) is drawn from a seeded generator, the same on every rank.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

import mpicoll
from mpicoll.collectives import algorithm_names
from mpicoll.transport import Comm

from .harness import meta, say

SIZES = (1, 7, 1000, 4099, 65536, 262147)
DTYPES = ("float32", "int64", "float16", "float64", "int32")


def resident_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cases(comm: Comm) -> dict[tuple[int, str], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Input, expected sum and an output buffer for every (size, dtype)."""
    cases = {}
    for size in SIZES:
        for dtype in DTYPES:
            base = np.arange(size) % 5
            x = (base + comm.rank).astype(dtype)
            expected = (base * comm.size + comm.size * (comm.size - 1) // 2).astype(dtype)
            cases[(size, dtype)] = (x, expected, np.empty_like(x))
    return cases


def run(args: argparse.Namespace, comm: Comm) -> dict[str, Any]:
    cases = _cases(comm)
    algorithms = [*algorithm_names("allreduce"), "auto"]
    plan = np.random.default_rng(args.seed)
    with mpicoll.config.override(validate=False):
        for x, _, out in cases.values():  # warm-up: every buffer and scratch size touched
            for algorithm in algorithms:
                mpicoll.allreduce(x, algorithm=algorithm, comm=comm, out=out)
        comm.mpi.Barrier()
        start_rss, start = resident_bytes(), time.perf_counter()
        wrong = 0
        keys = list(cases)
        for i in range(args.calls):
            x, expected, out = cases[keys[plan.integers(len(keys))]]
            algorithm = algorithms[plan.integers(len(algorithms))]
            mpicoll.allreduce(x, algorithm=algorithm, comm=comm, out=out)
            wrong += int(np.count_nonzero(out != expected))
            if args.progress and comm.rank == 0 and (i + 1) % args.progress == 0:
                say(comm, f"# {i + 1} calls, {resident_bytes() / 2**20:.1f} MiB resident on rank 0")
        seconds = time.perf_counter() - start
        end_rss = resident_bytes()
    per_rank = comm.mpi.allgather((start_rss, end_rss, wrong))
    return {"calls": args.calls, "seconds": seconds, "calls_per_s": args.calls / seconds,
            "wrong": sum(w for _, _, w in per_rank),
            "rss_start_MiB": [s / 2**20 for s, _, _ in per_rank], "rss_end_MiB": [e / 2**20 for _, e, _ in per_rank],
            "max_growth_pct": max(100 * (e - s) / s for s, e, _ in per_rank)}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("soak", help="thousands of checked all-reduces; resident memory at start and end")
    p.add_argument("-n", "--calls", type=int, default=10000, help="all-reduce calls (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", type=int, default=0, help="print a line every this many calls (0: never)")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")


def run_soak(args: argparse.Namespace, comm: Comm) -> int:
    run_meta = meta(comm)
    say(comm, f"# soak: {args.calls} all-reduces over sizes {SIZES}, dtypes {DTYPES} and every algorithm, "
              f"{comm.size} ranks, {run_meta['mpi_library']}")
    summary = run(args, comm)
    say(comm, f"# {summary['calls']} calls in {summary['seconds']:.1f} s ({summary['calls_per_s']:.0f}/s); "
              f"wrong elements: {summary['wrong']}")
    say(comm, "# resident MiB per rank, start -> end: " + ", ".join(
        f"{s:.1f} -> {e:.1f}" for s, e in zip(summary["rss_start_MiB"], summary["rss_end_MiB"], strict=True)))
    ok = summary["wrong"] == 0 and summary["max_growth_pct"] < 5
    say(comm, f"# largest growth {summary['max_growth_pct']:.2f}% (target < 5%): {'OK' if ok else 'FAILED'}")
    if args.json and comm.rank == 0:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"meta": run_meta, "summary": summary}, fh, indent=1)
    return 0 if ok else 1
