"""``mpicoll-bench compress``: compressor throughput per kernel provider, single process.

For each provider and compressor: the wire compression ratio (input bytes / payload bytes),
compress and decompress throughput in GB/s of *input*, both together, and the relative error
``||decompress(compress(x)) - x|| / ||x||`` on Gaussian data. Measured in the same run as the
ceilings it is compared with: ``np.copyto`` of the input (memory bandwidth) and, for the top-k
compressors, ``np.argpartition`` of ``|x|``. Fixed-size payloads and decoded outputs reuse their
buffers (``out=``), as a training loop would, so first-touch page faults are not measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from mpicoll.kernels import order, provider_status

from mpicoll import compression, config

from .harness import command_line, format_size, parse_size

DEFAULT_COMPRESSORS = "fp16,bf16,int8,int4,qsgd,sign,topk,topk_approx,randomk"


@dataclass
class CompressRecord:
    """One row of ``compress`` results (also the JSON schema)."""

    compressor: str
    provider: str
    size_bytes: int
    dtype: str
    ratio: float
    compress_GBps: float
    decompress_GBps: float
    both_GBps: float
    rel_error: float
    copy_GBps: float
    argpartition_ms: float


def seconds_per_call(fn: Callable[[], Any], repeats: int, budget_s: float) -> float:
    """Median over ``repeats`` of the mean time of back-to-back calls (about ``budget_s`` each)."""
    fn()  # warm-up: JIT compilation, first touch of reused buffers
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(budget_s / once))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def measure(name: str, provider: str, x: np.ndarray, baselines: dict[str, float], repeats: int,
            budget_s: float) -> CompressRecord:
    """Time one compressor with one provider on ``x``."""
    with config.override(kernel_providers=provider):
        codec = compression.get(name)
        size = codec.payload_nbytes(x)
        buffer = None if size is None else np.empty(size, dtype=np.uint8)
        t_c = seconds_per_call(lambda: codec.compress(x, key="bench", out=buffer), repeats, budget_s)
        payload, ctx = codec.compress(x, key="bench", out=buffer)  # the pair decompress times (same step)
        decoded = np.empty_like(x)
        t_d = seconds_per_call(lambda: codec.decompress(payload, ctx, out=decoded), repeats, budget_s)
    err = float(np.linalg.norm(decoded.astype(np.float64) - x) / max(np.linalg.norm(x.astype(np.float64)), 1e-30))
    gb = x.nbytes / 1e9
    return CompressRecord(name, provider, x.nbytes, x.dtype.name, x.nbytes / payload.nbytes, gb / t_c, gb / t_d,
                          gb / (t_c + t_d), err, baselines["copy_GBps"], baselines["argpartition_ms"])


def baselines(x: np.ndarray, repeats: int, budget_s: float, ratio: float = 0.01) -> dict[str, float]:
    """``np.copyto`` bandwidth and ``np.argpartition`` time on the same input."""
    target = np.empty_like(x)
    t_copy = seconds_per_call(lambda: np.copyto(target, x), repeats, budget_s)
    kth = x.size - max(1, int(ratio * x.size))
    t_part = seconds_per_call(lambda: np.argpartition(np.abs(x), kth), max(1, repeats // 2), budget_s)
    return {"copy_GBps": x.nbytes / t_copy / 1e9, "argpartition_ms": t_part * 1e3}


def available_cpu_providers() -> list[str]:
    """CPU providers that can run here, in the configured order."""
    return [p for p in order("cpu") if provider_status(p)[0].available]


HEADER = (f"{'compressor':>12} {'provider':>10} {'size':>6} {'ratio':>7} {'comp GB/s':>9} {'decomp GB/s':>11} "
          f"{'both GB/s':>9} {'rel.err':>8} {'copy GB/s':>9} {'vs argpart':>10}")


def format_row(r: CompressRecord) -> str:
    """One table line; ``vs argpart`` is how many times faster compress is than ``np.argpartition``."""
    speedup = r.argpartition_ms / 1e3 / (r.size_bytes / 1e9 / r.compress_GBps)
    vs = f"{speedup:10.1f}x" if r.compressor.startswith("topk") else f"{'':>11}"
    return (f"{r.compressor:>12} {r.provider:>10} {format_size(r.size_bytes):>6} {r.ratio:7.1f} {r.compress_GBps:9.2f} "
            f"{r.decompress_GBps:11.2f} {r.both_GBps:9.2f} {r.rel_error:8.4f} {r.copy_GBps:9.2f}{vs}")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compress", help="compressor throughput per kernel provider (single process, no MPI)")
    p.add_argument("-s", "--size", default="64M", help="input size in bytes (default 64M)")
    p.add_argument("-d", "--datatype", default="float32", help="float16, float32 or float64 (default float32)")
    p.add_argument("--compressors", default=DEFAULT_COMPRESSORS,
                   help=f"comma-separated (default {DEFAULT_COMPRESSORS})")
    p.add_argument("--providers", default=None, help="comma-separated CPU providers (default: all available)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement; median reported")
    p.add_argument("--budget", type=float, default=0.5, help="about this many seconds per round")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def run_compress(args: argparse.Namespace) -> int:
    dtype = np.dtype(args.datatype)
    count = parse_size(args.size) // dtype.itemsize
    x = np.random.default_rng(0).standard_normal(count).astype(dtype)
    providers = args.providers.split(",") if args.providers else available_cpu_providers()
    base = baselines(x, args.repeats, args.budget)
    print(f"# mpicoll-bench compress: {format_size(x.nbytes)} of {dtype.name} Gaussian values; np.copyto "
          f"{base['copy_GBps']:.2f} GB/s, np.argpartition(|x|, 1%) {base['argpartition_ms']:.1f} ms (same run)")
    print(HEADER)
    records = []
    for provider in providers:
        for name in args.compressors.split(","):
            record = measure(name.strip(), provider, x, base, args.repeats, args.budget)
            records.append(record)
            print(format_row(record), flush=True)
    if args.json:
        document = {"meta": {"command": command_line(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             **base}, "results": [asdict(r) for r in records]}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=1)
        print(f"# wrote {args.json}")
    return 0
