"""``mpicoll-bench compressed-allreduce``: compressed against uncompressed all-reduce, side by side.

Run it under MPI, on the multi-host bed to see what compression buys on a slow network::

    python -m mpicoll.bench.netbed run --hosts 3 --rate 200mbit -- \\
        python -m mpicoll.bench compressed-allreduce -s 64M --json out.json

Every row is measured in the same run, after one full-size warm-up, as the median of
``--repeats`` calls: ``MPI.Allreduce`` (native), mpicoll's uncompressed ring, then each
compressor (with error feedback unless ``--no-ef``), averaging as a training loop would. Per
row: bytes this rank put on its link per call (from eth0's counters inside a bed host, else the
payload size), time, effective busbw (uncompressed bytes, nccl-tests factor 2(p-1)/p), speedup
over native and over the ring, and the relative error against the exact mean, which every rank
computes in float64 from all ranks' (seeded) inputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import mpicoll
from mpicoll import compression
from mpicoll.transport import Comm

from .harness import format_size, meta, parse_size, say

DEFAULT = "fp16,randomk,topk,topk_approx,int8,int4,qsgd,sign,powersgd"
_TX = Path("/sys/class/net/eth0/statistics/tx_bytes")


@dataclass
class CompressedRecord:
    """One row (also the JSON schema)."""

    name: str
    nranks: int
    size_bytes: int
    wire_bytes_per_rank: float
    time_s: float
    busbw_GBps: float
    speedup_vs_native: float
    speedup_vs_ring: float
    rel_error: float


def _input(rank: int, count: int) -> np.ndarray:
    return np.random.default_rng([12345, rank]).standard_normal(count, dtype=np.float32)


def _tx() -> int | None:
    return int(_TX.read_text()) if _TX.exists() else None


def measure(comm: Comm, call: Callable[[], Any], repeats: int) -> tuple[float, float | None, Any]:
    """Median seconds per call (slowest rank), mean link bytes per call, and the last result."""
    result = call()  # full-size warm-up: fresh TCP connections and buffers are slower
    times, sent = [], []
    for _ in range(repeats):
        tx0 = _tx()
        comm.mpi.Barrier()
        start = time.perf_counter()
        result = call()
        elapsed = comm.mpi.allreduce(time.perf_counter() - start, op=_max())
        times.append(elapsed)
        tx1 = _tx()
        if tx0 is not None and tx1 is not None:
            sent.append(tx1 - tx0)
    return statistics.median(times), (statistics.mean(sent) if sent else None), result


def _max() -> Any:
    from mpi4py import MPI

    return MPI.MAX


def run(args: argparse.Namespace, comm: Comm) -> list[CompressedRecord]:
    count = parse_size(args.size) // 4
    x = _input(comm.rank, count)
    exact = np.zeros(count, dtype=np.float64)
    for rank in range(comm.size):
        exact += _input(rank, count)
    exact /= comm.size
    norm = np.linalg.norm(exact)
    factor = 2 * (comm.size - 1) / comm.size
    rows: list[CompressedRecord] = []

    def record(name: str, seconds: float, sent: float | None, result: Any, payload_bytes: float) -> None:
        base = rows[0].time_s if rows else seconds
        ring = rows[1].time_s if len(rows) > 1 else seconds
        error = float(np.linalg.norm(result.astype(np.float64) - exact) / norm)
        row = CompressedRecord(name, comm.size, x.nbytes, sent if sent is not None else payload_bytes, seconds,
                               x.nbytes * factor / seconds / 1e9, base / seconds, ring / seconds, error)
        rows.append(row)
        say(comm, _format(row))

    out = np.empty_like(x)
    say(comm, HEADER)
    for name, algorithm in (("MPI.Allreduce", "native"), ("ring (uncompressed)", "ring")):
        seconds, sent, _ = measure(comm, lambda a=algorithm: mpicoll.allreduce(x, "avg", algorithm=a, comm=comm,
                                                                               out=out), args.repeats)
        record(name, seconds, sent, out, x.nbytes * factor)
    for name in [n.strip() for n in args.compressors.split(",") if n.strip()]:
        codec = compression.get(name, **({"ratio": args.ratio} if name in ("topk", "topk_approx", "randomk") else {}))
        codec = compression.ErrorFeedback(codec) if args.ef else codec
        label = f"{name}{' + EF' if args.ef else ''}"
        seconds, sent, result = measure(comm, lambda c=codec: mpicoll.compressed_allreduce(x, c, key="bench",
                                                                                           comm=comm), args.repeats)
        payload = codec.compress(x, key="size-probe")[0].nbytes
        record(label, seconds, sent, result, payload)
    return rows


HEADER = (f"{'what':>22} {'link bytes/rank':>16} {'time (s)':>9} {'busbw GB/s':>10} {'vs native':>9} "
          f"{'vs ring':>8} {'rel.err':>8}")


def _format(r: CompressedRecord) -> str:
    return (f"{r.name:>22} {r.wire_bytes_per_rank:>16.0f} {r.time_s:>9.3f} {r.busbw_GBps:>10.4f} "
            f"{r.speedup_vs_native:>8.1f}x {r.speedup_vs_ring:>7.1f}x {r.rel_error:>8.4f}")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compressed-allreduce", help="compressed vs uncompressed all-reduce, side by side")
    p.add_argument("-s", "--size", default="64M", help="float32 array size (default 64M)")
    p.add_argument("--compressors", default=DEFAULT, help=f"comma-separated (default {DEFAULT})")
    p.add_argument("--ratio", type=float, default=0.01, help="top-k / random-k ratio (default 0.01)")
    p.add_argument("--no-ef", dest="ef", action="store_false", help="without error feedback")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per row; the median is reported")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def run_compressed(args: argparse.Namespace, comm: Comm) -> int:
    run_meta = meta(comm)
    say(comm, f"# compressed-allreduce: {format_size(parse_size(args.size))} float32, {comm.size} ranks on "
              f"{run_meta['nhosts']} host(s), {run_meta['mpi_library']}; median of {args.repeats} after a warm-up")
    rows = run(args, comm)
    if args.json and comm.rank == 0:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"meta": run_meta, "results": [asdict(r) for r in rows]}, fh, indent=1)
        say(comm, f"# wrote {args.json}")
    return 0
