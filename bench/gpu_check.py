"""The prepared GPU check: every CuPy and Numba-CUDA kernel verified and timed, in one command.

On a machine with one NVIDIA GPU (the lent H100/H200 image has torch, cupy-cuda13x, numba-cuda,
mpi4py and pytest, and no network)::

    python -m mpicoll.bench.gpu_check --json "$OUT/gpu_check.json"

1. parity: every operation of both GPU providers against the NumPy reference on fresh random
   inputs (Gaussian, with ties, NaN, inf and signed zeros), bitwise where the contract promises
   it, plus the largest relative error;
2. timing: each kernel with CUDA events (warm-up, median of repeats) against a device-to-device
   copy of the same input measured in the same run, and top-k against ``torch.topk``;
3. collectives: ``mpicoll.allreduce`` and ``compressed_allreduce`` with 2 ranks sharing the GPU:
   staged through host memory, and directly on CuPy arrays when ``MPICOLL_CUDA_AWARE=1`` is set
   for a CUDA-aware MPI;
4. a short table last, and JSON.

``--dry-run`` runs the same code without a GPU: the Numba-CUDA provider under the CUDA simulator
on small inputs, wall-clock timing instead of CUDA events, CuPy reported as unavailable (with the
reason). It finishes in about a minute and is what CI-like machines can check.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

GPU_PROVIDERS = ("cupy", "numba-cuda")


def _inputs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, n])
    x = (rng.standard_normal(n) * 10).astype(np.float32)
    if n > 64:
        x[5::17] = x[3]
        x[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-8]
    return x


def cases(n: int) -> dict[str, tuple[tuple, dict]]:
    """Every operation with host arguments (arrays are moved to the device by the caller)."""
    x = _inputs(n)
    finite = np.nan_to_num(x, nan=1.0, posinf=2.0, neginf=-2.0)
    from mpicoll.kernels import reference as ref

    packed, scales = ref.quantize(finite, 8, 256, "max", 127, False, 7)
    signs, sscales = ref.sign_pack(finite, 4096)
    half = ref.fp16_encode(finite)
    mat = finite[: (n // 64) * 64].reshape(-1, 64).copy()
    mat[::3] = 0
    csr = ref.csr_build(mat)
    k = max(1, n // 100)
    rows = max(1, math.isqrt(n))
    p_factor = (finite[: rows * 4].reshape(-1, 4) / 10).copy()  # PowerSGD's factors: (rows, 4) and (n / rows, 4)
    q_factor = np.resize(finite[::-1], (-(-n // rows), 4)).astype(np.float32)
    return {
        "uniform": ((12345, n), {}),
        "stratified_indices": ((12345, n, k), {}),
        "topk": ((x, k), {}),
        "threshold": ((x, 12.0), {}),
        "nonzero": ((x,), {}),
        "quantize": ((finite, 8, 256, "max", 127, False, 7), {}),
        "quantize_stochastic": ((finite, 4, 256, "l2", 7, True, 7), {}),
        "dequantize": ((packed, scales, n, 8, 256), {}),
        "sign_pack": ((finite, 4096), {}),
        "sign_unpack": ((signs, sscales, n, 4096), {}),
        "fp16_encode": ((x,), {}),
        "fp16_decode": ((half,), {}),
        "bf16_encode": ((x,), {}),
        "bf16_decode": ((half,), {}),
        "scatter_add": ((np.zeros(n, np.float32), np.arange(0, n, 7, dtype=np.int64),
                         np.ones(len(range(0, n, 7)), np.float32)), {}),
        "csr_build": ((mat,), {}),
        "csr_densify": ((*csr, mat.shape, mat.dtype), {}),
        "lowrank_reconstruct": ((p_factor, q_factor, n), {}),
    }


def _op_name(case: str) -> str:
    return "quantize" if case == "quantize_stochastic" else case


def _to_device(value: Any, xp: Any) -> Any:
    return xp.asarray(value) if isinstance(value, np.ndarray) else value


def _to_host(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_to_host(v) for v in value)
    return value.get() if hasattr(value, "get") else np.asarray(value)


def _compare(got: Any, want: Any) -> tuple[bool, float]:
    """Bitwise agreement, and the largest relative error over finite float elements."""
    if isinstance(want, tuple):
        results = [_compare(g, w) for g, w in zip(got, want, strict=True)]
        return all(r[0] for r in results), max(r[1] for r in results)
    got, want = np.asarray(got), np.asarray(want)
    same = got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()
    err = 0.0
    if want.dtype.kind == "f" and got.shape == want.shape and want.size:
        finite = np.isfinite(want) & np.isfinite(got)
        if finite.any():
            denom = np.maximum(np.abs(want[finite].astype(np.float64)), 1e-30)
            err = float(np.max(np.abs(got[finite].astype(np.float64) - want[finite]) / denom))
    return same, err


def device_array_module(provider: str, dry_run: bool) -> Any:
    """CuPy where a GPU runs; NumPy for the Numba simulator in a dry run."""
    if dry_run:
        return np
    import cupy

    return cupy


class Timer:
    """CUDA events on a GPU (``# synchronize!`` on read), wall clock in a dry run."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run

    def median_ms(self, fn: Callable[[], Any], repeats: int) -> float:
        fn()
        fn()
        samples = []
        for _ in range(repeats):
            if self.dry_run:
                start = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - start) * 1e3)
                continue
            import cupy

            begin, end = cupy.cuda.Event(), cupy.cuda.Event()
            begin.record()
            fn()
            end.record()
            end.synchronize()  # synchronize!
            samples.append(cupy.cuda.get_elapsed_time(begin, end))
        return statistics.median(samples)


def check_provider(provider: str, n: int, dry_run: bool, repeats: int) -> list[dict[str, Any]]:
    """Parity and timing of every operation of one GPU provider."""
    from mpicoll.kernels import provider_ops, provider_status
    from mpicoll.kernels import reference as ref

    status = provider_status(provider)[0]
    if not status.available:
        return [{"provider": provider, "op": "(all)", "available": False, "reason": status.reason}]
    ops, xp, timer = provider_ops(provider), device_array_module(provider, dry_run), Timer(dry_run)
    copy_src = xp.asarray(_inputs(n))
    copy_dst = xp.empty_like(copy_src)
    copy_ms = timer.median_ms(lambda: copy_dst.__setitem__(Ellipsis, copy_src), repeats)
    rows = []
    for case, (args, kwargs) in cases(n).items():
        op = _op_name(case)
        want = ref.OPS[op](*[a.copy() if isinstance(a, np.ndarray) else a for a in args], **kwargs)
        if op == "scatter_add":
            want = args[0] + 0  # the reference adds in place: compare the dense array
            ref.scatter_add(want, args[1], args[2])
        device_args = [_to_device(a, xp) for a in args]
        result = ops[op](*device_args, **kwargs)
        got = _to_host(device_args[0] if op == "scatter_add" else result)
        same, err = _compare(got, want)
        ms = timer.median_ms(lambda op=op, args=device_args, kw=kwargs: ops[op](*args, **kw), repeats)
        rows.append({"provider": provider, "op": case, "available": True, "bitwise": same, "rel_error": err,
                     "ms": ms, "copy_ms": copy_ms, "vs_copy": copy_ms / ms if ms else 0.0, "n": n})
    return rows


def torch_topk(n: int, repeats: int) -> dict[str, Any] | None:
    """``torch.topk`` against our CuPy top-k on the same data (both on the GPU), or None."""
    try:
        import cupy
        import torch
    except ImportError as exc:
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    if not torch.cuda.is_available():
        return {"skipped": "torch sees no CUDA device"}
    from mpicoll.kernels import provider_ops

    x = cupy.random.standard_normal(n, dtype=cupy.float32)
    k = n // 100
    timer = Timer(False)
    ours = timer.median_ms(lambda: provider_ops("cupy")["topk"](x, k), repeats)
    tx = torch.as_tensor(x, device="cuda")
    theirs = timer.median_ms(lambda: torch.topk(tx.abs(), k, sorted=False), repeats)
    return {"n": n, "k": k, "mpicoll_cupy_ms": ours, "torch_topk_ms": theirs, "speedup": theirs / ours}


COLLECTIVE_PART = """
import json, os, sys, numpy as np
import mpicoll
from mpicoll import compression
rank = mpicoll.rank()
results = []
x = np.random.default_rng(rank).standard_normal(1 << 22).astype(np.float32)
exact = mpicoll.allreduce(x)
try:
    import cupy
    gx = cupy.asarray(x)
    aware = os.environ.get("MPICOLL_CUDA_AWARE") == "1"
    for algorithm in ("ring", "tree", "recursive_doubling", "rabenseifner", "native"):
        with mpicoll.config.override(cuda_aware="0"):  # staged through pinned host buffers
            got = mpicoll.allreduce(gx, algorithm=algorithm)
            results.append((f"allreduce {algorithm} staged", bool((got.get() == exact).all())))
        if aware:
            got = mpicoll.allreduce(gx, algorithm=algorithm)
            results.append((f"allreduce {algorithm} direct (CUDA-aware)", bool((got.get() == exact).all())))
    with mpicoll.config.override(cuda_aware="0"):
        handle = mpicoll.iallreduce(gx)
        results.append(("iallreduce staged", bool((handle.wait().get() == exact).all())))
        fp16 = mpicoll.compressed_allreduce(gx, compression.get("fp16"), average=False)
        results.append(("compressed_allreduce fp16 staged", float(abs(fp16.get() - exact).max())))
except Exception as exc:
    results.append(("GPU collectives", f"{type(exc).__name__}: {exc}"))
codec = compression.ErrorFeedback(compression.get("topk", ratio=0.01))
y = mpicoll.compressed_allreduce(x, codec, key="w")
results.append(("compressed_allreduce topk (host)", bool(np.isfinite(y).all())))
if rank == 0:
    sys.stdout.write("COLLECTIVES " + json.dumps(results) + "\\n")
"""


def collectives(dry_run: bool) -> Any:
    """Run the two-rank collective part under mpiexec; its rank-0 report, or the failure."""
    mpiexec = Path(sys.prefix) / "bin" / "mpiexec"
    if not mpiexec.exists():
        from shutil import which

        found = which("mpiexec")
        if found is None:
            return {"skipped": "no mpiexec"}
        mpiexec = Path(found)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    done = subprocess.run([str(mpiexec), "-n", "2", sys.executable, "-m", "mpi4py", "-c", COLLECTIVE_PART],
                          capture_output=True, text=True, timeout=180, env=env)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("COLLECTIVES ")), None)
    if done.returncode or line is None:
        return {"failed": (done.stdout + done.stderr)[-2000:]}
    return json.loads(line.split(" ", 1)[1])


def summary(report: dict[str, Any]) -> str:
    """The short table printed last."""
    lines = [f"# mpicoll GPU check on {report['device']} ({'dry run' if report['dry_run'] else 'GPU'})",
             f"{'provider':>10} {'op':>20} {'bitwise':>8} {'rel.err':>9} {'ms':>9} {'vs D2D copy':>11}"]
    for r in report["kernels"]:
        if not r.get("available"):
            lines.append(f"{r['provider']:>10} {'(all)':>20}  unavailable: {r['reason']}")
            continue
        lines.append(f"{r['provider']:>10} {r['op']:>20} {'yes' if r['bitwise'] else 'NO':>8} {r['rel_error']:9.2e} "
                     f"{r['ms']:9.3f} {r['vs_copy']:10.2f}x")
    lines.append(f"# top-k vs torch.topk: {report['torch_topk']}")
    lines.append(f"# collectives: {report['collectives']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="no GPU: Numba-CUDA under the simulator")
    parser.add_argument("-n", type=int, default=None, help="elements per kernel input (default 64M, dry run 4K)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 20, dry run 2)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    args = parser.parse_args(argv)
    if args.dry_run:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba.cuda is imported anywhere
    n = args.n or (4096 if args.dry_run else 64 << 20)
    repeats = args.repeats or (2 if args.dry_run else 20)
    started = time.time()
    report: dict[str, Any] = {"dry_run": args.dry_run, "n": n, "device": _device_name(args.dry_run), "kernels": []}
    for provider in GPU_PROVIDERS:
        report["kernels"] += check_provider(provider, n, args.dry_run, repeats)
    report["torch_topk"] = {"skipped": "dry run"} if args.dry_run else torch_topk(n, repeats)
    report["collectives"] = collectives(args.dry_run)
    report["seconds"] = time.time() - started
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(summary(report), flush=True)
    bad = [r for r in report["kernels"] if r.get("available") and not r["bitwise"]]
    return 1 if bad else 0


def _device_name(dry_run: bool) -> str:
    if dry_run:
        return "CUDA simulator"
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception as exc:  # report, do not fail: the kernel section says what is unavailable
        return f"no usable GPU ({type(exc).__name__})"


if __name__ == "__main__":
    sys.exit(main())
