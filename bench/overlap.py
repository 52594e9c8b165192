"""``mpicoll-bench overlap``: how much of a non-blocking all-reduce hides behind compute.

Measured in the manner of OSU's ``osu_iallreduce``, per message size and on every rank:

1. *pure comm*: ``iallreduce(x).wait()`` with nothing in between, mean per iteration;
2. a dummy compute calibrated to last as long as the pure communication (single-threaded NumPy
   work on a cache-resident array, in slices of tens of microseconds, each of which releases the
   GIL so that the engine thread can run);
3. *overall*: start the all-reduce, run the dummy compute, ``wait()``; the compute is timed
   inside this loop too (*compute*), and alone beforehand (*compute alone*).

``overlap % = max(0, 100 - 100 * (overall - compute) / pure_comm)`` (OSU's formula, with the
compute time measured inside the overlapped loop), averaged over ranks. OSU's formula forgives
compute that got slower because communication took its core; the *strict* column uses the
compute time measured alone instead, and so also counts that slowdown against overlap.
Every plain all-reduce result is checked against the exact sum (``#wrong``); compressed results
are lossy by design and not counted.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import mpicoll
from mpicoll.transport import Comm

from .exact import count_wrong, expected, values
from .harness import format_size, meta, parse_size, say, sweep

HEADER = (f"{'size':>10} {'algorithm':>20} {'pure(us)':>12} {'compute(us)':>12} {'alone(us)':>12} "
          f"{'overall(us)':>12} {'overlap(%)':>10} {'strict(%)':>9} {'#wrong':>7}")


class DummyCompute:
    """Single-threaded, GIL-releasing busy work whose duration is calibrated once."""

    def __init__(self, elements: int = 16384) -> None:
        self.a = np.random.default_rng(0).random(elements)
        self.b = np.empty_like(self.a)
        self.slice_s = self._calibrate()

    def _slice(self) -> None:
        np.sin(self.a, out=self.b)  # ~100 us on 16K doubles; NumPy drops the GIL inside

    def _calibrate(self) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(50):
                self._slice()
            best = min(best, (time.perf_counter() - start) / 50)
        return best

    def run(self, seconds: float) -> None:
        """Do the amount of work that takes ``seconds`` on an idle core."""
        for _ in range(max(1, round(seconds / self.slice_s))):
            self._slice()


def _measure(comm: Comm, start: Callable[[], Any], compute: DummyCompute, iters: int) -> dict[str, float]:
    """Pure comm, compute alone, compute inside and overall time per iteration on this rank."""
    def timed(body: Callable[[], Any]) -> float:
        comm.mpi.Barrier()
        begin = time.perf_counter()
        for _ in range(iters):
            body()
        return (time.perf_counter() - begin) / iters

    pure = timed(lambda: start().wait())
    pure = comm.mpi.allreduce(pure) / comm.size  # every rank computes the same amount
    alone = timed(lambda: compute.run(pure))
    inside = 0.0

    def overlapped() -> None:
        nonlocal inside
        handle = start()
        begin = time.perf_counter()
        compute.run(pure)
        inside += time.perf_counter() - begin
        handle.wait()

    overall = timed(overlapped)
    inside /= iters
    return {"pure_s": pure, "compute_s": inside, "compute_alone_s": alone, "overall_s": overall,
            "overlap_pct": max(0.0, 100 - 100 * (overall - inside) / pure),
            "strict_pct": max(0.0, 100 - 100 * (overall - alone) / pure)}


def _average(comm: Comm, result: dict[str, float]) -> dict[str, float]:
    everyone = comm.mpi.allgather(result)
    return {k: sum(r[k] for r in everyone) / comm.size for k in result}


def _starter(args: argparse.Namespace, comm: Comm, x: np.ndarray, out: np.ndarray,
             compressor: Any) -> Callable[[], Any]:
    """What one iteration starts: the plain or the compressed non-blocking all-reduce of ``x``."""
    if compressor is None:
        return lambda: mpicoll.iallreduce(x, algorithm=args.algo, comm=comm, out=out)
    return lambda: mpicoll.compressed_iallreduce(x, compressor, key="overlap", comm=comm, algorithm=args.algo)


def run(args: argparse.Namespace, comm: Comm) -> list[dict[str, Any]]:
    """Measure every size; one dict per size (averages over ranks)."""
    args.algo = args.algo or ("ring" if args.compressor is None else "auto")
    compute = DummyCompute()
    compressor = None if args.compressor is None else mpicoll.compression.get(args.compressor)
    rows = []
    for size in sweep(parse_size(args.minbytes), parse_size(args.maxbytes), args.stepfactor):
        count = size // 4
        x = values(count, comm.rank, "sum", np.dtype(np.float32))
        out = np.zeros_like(x)
        want = expected(count, comm.size, "sum", np.dtype(np.float32)) if compressor is None else None
        start = _starter(args, comm, x, out, compressor)
        for _ in range(args.warmup_iters):
            start().wait()
        result = _measure(comm, start, compute, args.iters)
        wrong = comm.mpi.allreduce(count_wrong(out, want))
        row = {"size": size, "algorithm": args.algo, "compressor": args.compressor, "iters": args.iters,
               **_average(comm, result), "wrong": wrong}
        rows.append(row)
        say(comm, f"{format_size(size):>10} {args.algo:>20} {row['pure_s'] * 1e6:12.0f} "
                  f"{row['compute_s'] * 1e6:12.0f} {row['compute_alone_s'] * 1e6:12.0f} "
                  f"{row['overall_s'] * 1e6:12.0f} {row['overlap_pct']:10.1f} {row['strict_pct']:9.1f} {wrong:7d}")
    return rows


def add_parser(sub: Any) -> None:
    """Register the ``overlap`` subcommand."""
    p = sub.add_parser("overlap", help="overlap of a non-blocking all-reduce with compute (osu_iallreduce style)")
    p.add_argument("-b", "--minbytes", default="1M", help="smallest message size (default 1M)")
    p.add_argument("-e", "--maxbytes", default="16M", help="largest message size (default 16M)")
    p.add_argument("-f", "--stepfactor", type=float, default=4, help="size multiplier (default 4)")
    p.add_argument("-n", "-i", "--iters", type=int, default=10, help="timed iterations per measurement (default 10)")
    p.add_argument("-w", "-x", "--warmup_iters", type=int, default=2, help="warm-up iterations (default 2)")
    p.add_argument("--algo", default=None,
                   help="all-reduce algorithm (default ring; auto with --compressor)")
    p.add_argument("--compressor", default=None,
                   help="time compressed_iallreduce with this compressor (e.g. topk) instead of iallreduce")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def run_overlap(args: argparse.Namespace, comm: Comm) -> int:
    """The subcommand: print the table, write JSON; exit status 1 if any result was wrong."""
    run_meta = meta(comm)
    what = "iallreduce" if args.compressor is None else f"compressed_iallreduce({args.compressor})"
    say(comm, f"# mpicoll-bench overlap: {what}, {comm.size} ranks on {run_meta['nhosts']} host(s), "
              f"{run_meta['mpi_library']}; engine_poll_us={mpicoll.config.get('engine_poll_us'):g}")
    say(comm, "# overlap% = max(0, 100 - 100*(overall - compute)/pure), compute timed inside the overlapped "
              "loop (OSU); strict% uses the compute time measured alone; averages over ranks")
    say(comm, HEADER)
    rows = run(args, comm)
    wrong = sum(r["wrong"] for r in rows)
    say(comm, f"# out of bounds values : {wrong} {'OK' if wrong == 0 else 'FAILED'}")
    if args.json and comm.rank == 0:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"meta": run_meta, "results": rows}, fh, indent=1)
            fh.write("\n")
    return 0 if wrong == 0 else 1
