"""The prepared GPU check: every CuPy and Numba-CUDA kernel verified and timed, in one command.

On a machine with one NVIDIA GPU (the lent H100/H200 image has torch, cupy-cuda13x, numba-cuda,
mpi4py and pytest, and no network)::

    python -m mpicoll.bench.gpu_check --json "$OUT/gpu_check.json"

1. parity: every operation of both GPU providers against the NumPy reference on fresh random
   inputs (Gaussian, with ties, NaN, inf and signed zeros), bitwise where the contract promises
   it, plus the largest relative error;
2. timing: each kernel with CUDA events (warm-up, median of repeats); its bandwidth (the bytes it
   must read and write at the least) against a device-to-device copy of the same input measured
   in the same run; top-k against ``torch.topk``, which must select the same values;
3. two ranks sharing the GPU (:mod:`.gpu_ranks`): every all-reduce algorithm and compressed
   all-reduce on CuPy arrays, staged through host memory and directly when
   ``MPICOLL_CUDA_AWARE=1`` is set for a CUDA-aware MPI, and the torch adapter (DDP on the
   ``"mpicoll"`` backend, ``DistributedOptimizer``, a compression hook, ``OneBitAdam``) on CUDA;
4. the cost model's GPU numbers: every codec compressing and decoding 64 MiB on the device, the
   reduction's speed and PowerSGD's products (``codec_rates``, read by
   ``mpicoll-bench predict --codec-rates``);
5. a short table last, and JSON.

``--dry-run`` runs the same code without a GPU: the Numba-CUDA provider under the CUDA simulator
on small inputs, wall-clock timing instead of CUDA events, CuPy reported as unavailable (with the
reason). It finishes in about a minute and is what CI-like machines can check.
"""

from __future__ import annotations

import argparse
import functools
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
    if n > 128:
        x[5::17] = x[3]
        x[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-8]
        tiny = np.finfo(np.float32).smallest_subnormal  # subnormals: a flushing kernel loses them
        x[6:12] = [tiny, -tiny, -3 * tiny, 7e-39, -5e-39, -1e-45]
        x[12 : 12 + 64] = -tiny * np.arange(1, 65, dtype=np.float32)  # a run of negative subnormals
    return x


@functools.lru_cache(maxsize=8)
def cases(n: int) -> dict[str, tuple[tuple, dict]]:
    """Every operation with host arguments (arrays are moved to the device by the caller; never
    written: the reference gets copies)."""
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
    p_factor = (np.resize(finite, (rows, 4)) / 10).astype(np.float32)  # PowerSGD's factors: (rows, 4) and (n / rows, 4)
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
        "sign_pack_one_scale": ((finite, max(1, n)), {}),  # the sign codec's default: one scale per tensor
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
    return {"quantize_stochastic": "quantize", "sign_pack_one_scale": "sign_pack"}.get(case, case)


def _to_device(value: Any, xp: Any) -> Any:
    """A copy on the device (a copy in host memory in a dry run: kernels may write their inputs)."""
    return xp.array(value) if isinstance(value, np.ndarray) else value


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


def _nbytes(value: Any) -> int:
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


def traffic_bytes(op: str, device_args: list[Any], result: Any) -> int:
    """Bytes a kernel must move at the least: its array inputs read, its outputs written.

    scatter-add touches only the indexed elements: index and value read, target read and written.
    """
    if op == "scatter_add":
        _, indices, values = device_args
        return int(indices.nbytes + values.nbytes + 2 * values.nbytes)
    return sum(_nbytes(a) for a in device_args) + _nbytes(result)


def _host_args(args: tuple) -> list[Any]:
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


_REFERENCES: dict[tuple[int, str], Any] = {}  # (n, case) -> the reference's result, shared by the providers


def _reference(op: str, args: tuple, kwargs: dict) -> Any:
    from mpicoll.kernels import reference as ref

    if op == "scatter_add":  # the reference adds in place: compare the dense array
        want = args[0] + 0
        ref.scatter_add(want, args[1], args[2])
        return want
    return ref.OPS[op](*_host_args(args), **kwargs)


def _parity(ops: dict, n: int, case: str, xp: Any) -> tuple[bool, float, list[Any], Any]:
    """One case of ``cases(n)`` on the provider against the (cached) reference result."""
    args, kwargs = cases(n)[case]
    op = _op_name(case)
    if (n, case) not in _REFERENCES:
        _REFERENCES[n, case] = _reference(op, args, kwargs)
    device_args = [_to_device(a, xp) for a in args]
    result = ops[op](*device_args, **kwargs)
    got = _to_host(device_args[0] if op == "scatter_add" else result)
    same, err = _compare(got, _REFERENCES[n, case])
    return same, err, device_args, result


def check_provider(provider: str, n: int, dry_run: bool, repeats: int,
                   small: tuple[int, ...] = (1, 7, 100003)) -> list[dict[str, Any]]:
    """Parity and timing of every operation of one GPU provider.

    Each operation is checked at ``n`` (and timed there) and at the ``small`` sizes, whose odd
    lengths leave partial blocks and warps. An operation that raises is a row with its error:
    the others still run.
    """
    from mpicoll.kernels import provider_ops, provider_status

    status = provider_status(provider)[0]
    if not status.available:
        return [{"provider": provider, "op": "(all)", "available": False, "reason": status.reason}]
    ops, xp, timer = provider_ops(provider), device_array_module(provider, dry_run), Timer(dry_run)
    copy_src = xp.asarray(_inputs(n))
    copy_dst = xp.empty_like(copy_src)
    copy_ms = timer.median_ms(lambda: copy_dst.__setitem__(Ellipsis, copy_src), repeats)
    copy_gbps = 2 * copy_src.nbytes / copy_ms / 1e6
    rows = []
    for case, (_, kwargs) in cases(n).items():
        op = _op_name(case)
        row: dict[str, Any] = {"provider": provider, "op": case, "available": True, "n": n, "copy_ms": copy_ms,
                               "copy_gbps": copy_gbps}
        try:
            same, err, device_args, result = _parity(ops, n, case, xp)
            row.update(bitwise=same, rel_error=err)
            ms = timer.median_ms(lambda op=op, args=device_args, kw=kwargs: ops[op](*args, **kw), repeats)
            gbps = traffic_bytes(op, device_args, result) / ms / 1e6 if ms else 0.0
            row.update(ms=ms, gbps=gbps, of_copy_bw=gbps / copy_gbps, vs_copy=copy_ms / ms if ms else 0.0)
            small_bad = []
            for m in small:
                s_same, s_err, _, _ = _parity(ops, m, case, xp)
                if not s_same:
                    small_bad.append(f"n={m}: rel.err {s_err:.2e}")
            row["small_sizes"] = "all bitwise" if not small_bad else "; ".join(small_bad)
            row["bitwise"] = same and not small_bad
        except Exception as exc:  # a defect to fix, reported with the rest
            row.update(bitwise=False, rel_error=float("nan"), error=f"{type(exc).__name__}: {exc}"[:400])
        rows.append(row)
        print(f"  {provider} {case}: {_row_text(row)}", flush=True)
    return rows


def _row_text(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    return (f"bitwise {'yes' if r['bitwise'] else 'NO'}  rel.err {r['rel_error']:.2e}  {r['ms']:.3f} ms  "
            f"{r['gbps']:.0f} GB/s ({r['of_copy_bw']:.0%} of copy)  small sizes: {r['small_sizes']}")


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
    indices = provider_ops("cupy")["topk"](x, k)
    mine = cupy.sort(cupy.abs(x[indices])).get()
    reference = torch.sort(torch.topk(tx.abs(), k, sorted=False).values).values.cpu().numpy()
    return {"n": n, "k": k, "mpicoll_cupy_ms": ours, "torch_topk_ms": theirs, "speedup": theirs / ours,
            "same_values_as_torch": bool(np.array_equal(mine, reference))}


def codec_rates(nbytes: int, dry_run: bool, repeats: int) -> dict[str, Any]:
    """The cost model's GPU numbers (``mpicoll-bench predict --codec-rates``): each codec of
    :data:`mpicoll.model.probe.CODECS` compressing and decoding a Gaussian array of ``nbytes`` on
    the device (what the probe measures on the host), the reduction's speed (``gamma``, seconds
    per byte added) and PowerSGD's thin products (``flops``). A codec that raises is reported."""
    from dataclasses import asdict

    from mpicoll.compression import get as get_compressor
    from mpicoll.model.probe import CODECS, codec_rates_of

    xp, timer = device_array_module("cupy", dry_run), Timer(dry_run)
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal(nbytes // 4).astype(np.float32))
    y = x.copy()
    gamma = timer.median_ms(lambda: xp.add(y, x, out=y), repeats) * 1e-3 / x.nbytes
    a = xp.asarray(rng.standard_normal((4096, 4096)).astype(np.float32))
    q = xp.asarray(rng.standard_normal((4096, 4)).astype(np.float32))
    flops = 2 * (2 * 4096 * 4096 * 4) / (timer.median_ms(lambda: a.T @ (a @ q), repeats) * 1e-3)
    codecs: dict[str, Any] = {}
    for name, params in CODECS.items():
        try:
            compressor = get_compressor(name, **params)
            payload, ctx = compressor.compress(x, key=("gpu", name))
            t_c = timer.median_ms(lambda c=compressor, n=name: c.compress(x, key=("gpu", n)), repeats) * 1e-3
            t_d = timer.median_ms(lambda c=compressor, p=payload, k=ctx: c.decompress(p, k), repeats) * 1e-3
            codecs[name] = asdict(codec_rates_of(compressor, params, payload, x.nbytes, t_c, t_d))
        except Exception as exc:  # reported with the rest
            codecs[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(f"  codec {name}: {codecs[name]}", flush=True)
    return {"bytes": int(x.nbytes), "gamma": gamma, "flops": flops, "codecs": codecs}


def collectives(dry_run: bool, timeout: float = 300) -> Any:
    """Run :mod:`.gpu_ranks` on two ranks under mpiexec; its rank-0 report, or the failure."""
    mpiexec = Path(sys.prefix) / "bin" / "mpiexec"
    if not mpiexec.exists():
        from shutil import which

        found = which("mpiexec")
        if found is None:
            return {"skipped": "no mpiexec"}
        mpiexec = Path(found)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)  # the ranks use the GPU itself, or (dry run) host memory only
    command = [str(mpiexec), "-n", "2", sys.executable, "-m", "mpicoll.bench.gpu_ranks"]
    try:
        done = subprocess.run(command + (["--dry-run"] if dry_run else []), capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        return {"failed": f"timed out after {timeout:.0f} s: {str(exc.stdout)[-1500:]} {str(exc.stderr)[-1500:]}"}
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("GPU_RANKS ")), None)
    if done.returncode or line is None:
        return {"failed": (done.stdout + done.stderr)[-3000:]}
    return json.loads(line.split(" ", 1)[1])


def summary(report: dict[str, Any]) -> str:
    """The short table printed last."""
    lines = [f"# mpicoll GPU check on {report['device']} ({'dry run' if report['dry_run'] else 'GPU'})",
             f"{'provider':>10} {'op':>20} verdict"]
    for r in report["kernels"]:
        if not r.get("available"):
            lines.append(f"{r['provider']:>10} {'(all)':>20}  unavailable: {r['reason']}")
            continue
        lines.append(f"{r['provider']:>10} {r['op']:>20} {_row_text(r)}")
    lines.append(f"# top-k vs torch.topk: {report['torch_topk']}")
    lines.append(f"# collectives: {report['collectives']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="no GPU: Numba-CUDA under the simulator")
    parser.add_argument("-n", type=int, default=None, help="elements per kernel input (default 64M, dry run 4K)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 20, dry run 2)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")
    parser.add_argument("--providers", default=",".join(GPU_PROVIDERS),
                        help=f"the GPU kernel providers to check (default {','.join(GPU_PROVIDERS)})")
    args = parser.parse_args(argv)
    if args.dry_run:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba.cuda is imported anywhere
    n = args.n or (4096 if args.dry_run else 64 << 20)
    repeats = args.repeats or (2 if args.dry_run else 20)
    started = time.time()
    report: dict[str, Any] = {"dry_run": args.dry_run, "n": n, "device": _device_name(args.dry_run), "kernels": []}

    def save() -> None:  # after every section: a run cut short still brings back what it did
        report["seconds"] = time.time() - started
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n")

    for provider in [p.strip() for p in args.providers.split(",") if p.strip()]:
        if provider not in GPU_PROVIDERS:
            parser.error(f"unknown provider {provider!r}; accepted: {', '.join(GPU_PROVIDERS)}")
        print(f"# {provider}", flush=True)
        report["kernels"] += check_provider(provider, n, args.dry_run, repeats,
                                            small=(1, 7, 1003) if args.dry_run else (1, 7, 100003))
        save()
    print("# codec rates for the cost model", flush=True)
    try:
        report["codec_rates"] = codec_rates(min(n, 16 << 20) * 4, args.dry_run, repeats)
    except Exception as exc:
        report["codec_rates"] = {"failed": f"{type(exc).__name__}: {exc}"}
    save()
    try:
        report["torch_topk"] = {"skipped": "dry run"} if args.dry_run else torch_topk(n, repeats)
    except Exception as exc:
        report["torch_topk"] = {"failed": f"{type(exc).__name__}: {exc}"}
    save()
    print("# two ranks", flush=True)
    report["collectives"] = collectives(args.dry_run)
    save()
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
