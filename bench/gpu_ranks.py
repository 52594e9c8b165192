"""The multi-rank half of the prepared GPU check: collectives and the torch adapter on CUDA.

Run by :mod:`.gpu_check` as ``mpiexec -n 2 python -m mpicoll.bench.gpu_ranks [--dry-run]``, two
ranks sharing one GPU. Every item is checked against the same operation on host memory (NumPy,
``MPI.Allreduce`` through mpicoll's own checked path) and recorded as ``(name, verdict)``, where
the verdict is ``True``/``False`` for exact agreement, a number for the largest error where only
a tolerance is promised, or the text of the exception; one failing item never hides the others.
Rank 0 prints one line, ``GPU_RANKS <json>``.

- collectives: every all-reduce algorithm on CuPy arrays staged through pinned host buffers, and
  directly when ``MPICOLL_CUDA_AWARE=1`` says the MPI is CUDA-aware; ``iallreduce``; compressed
  all-reduce (fp16, top-k with error feedback, sign, PowerSGD) on CuPy arrays against the same
  codec on host copies (the GPU kernels promise the reference's bits, so the results must match);
- torch (when it sees CUDA): DDP on the ``"mpicoll"`` backend, ``DistributedOptimizer``, a DDP
  compression hook and ``OneBitAdam``, all on CUDA parameters, against the host result or, where
  the optimizer itself is the subject, parameters bitwise equal on both ranks.

``--dry-run`` (no GPU) runs every part with NumPy arrays and CPU tensors in place of the GPU's:
it checks this script itself, and what CI-like machines can check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

Results = list[tuple[str, Any]]


def record(results: Results, name: str, fn: Callable[[], Any]) -> None:
    """Append ``(name, fn())``, or ``(name, "Error: text")`` when ``fn`` raises."""
    try:
        results.append((name, fn()))
    except Exception as exc:  # the report says what broke; the next item still runs
        results.append((name, f"{type(exc).__name__}: {exc}"[:400]))


def _same(a: Any, b: Any) -> bool:
    a, b = _host(a), _host(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _codec(name: str) -> Any:
    from mpicoll import compression

    if name == "topk+ef":
        return compression.ErrorFeedback(compression.get("topk", ratio=0.01))
    if name == "sign+ef":
        return compression.ErrorFeedback(compression.get("sign"))
    if name == "powersgd":
        return compression.get("powersgd", rank=4)
    return compression.get(name)


def collectives(results: Results, xp: Any) -> None:
    """All-reduces on ``xp`` arrays (CuPy: staged, and direct where CUDA-aware) against host memory.

    ``xp`` is NumPy for the stand-in run that checks this script itself on a machine without a GPU.
    """
    import mpicoll

    rank = mpicoll.rank()
    x = np.random.default_rng(rank).standard_normal(1 << 22).astype(np.float32)
    exact = mpicoll.allreduce(x)
    record(results, "host allreduce equals MPI.Allreduce", lambda: _same(exact, _mpi_allreduce(x)))
    gx = xp.asarray(x)
    aware = os.environ.get("MPICOLL_CUDA_AWARE") == "1"
    for algorithm in ("ring", "tree", "recursive_doubling", "rabenseifner", "native", "auto"):
        with mpicoll.config.override(cuda_aware="0"):  # staged through pinned host buffers
            record(results, f"allreduce {algorithm} staged",
                   lambda a=algorithm: _same(mpicoll.allreduce(gx, algorithm=a), exact))
        if aware:
            record(results, f"allreduce {algorithm} direct (CUDA-aware)",
                   lambda a=algorithm: _same(mpicoll.allreduce(gx, algorithm=a), exact))
    with mpicoll.config.override(cuda_aware="0"):
        record(results, "iallreduce staged", lambda: _same(mpicoll.iallreduce(gx).wait(), exact))
        for name in ("fp16", "topk+ef", "sign+ef", "powersgd"):
            record(results, f"compressed_allreduce {name}: GPU equals host",
                   lambda n=name: _compressed_same(x, gx, n))


def _compressed_same(x: np.ndarray, gx: Any, name: str) -> bool | float:
    """Three steps of one codec on the GPU and on the host: ``True`` when every step gives the
    same bits, else the largest difference relative to the largest value of the host result
    (PowerSGD's products run on cuBLAS, whose summation order NumPy's BLAS need not share)."""
    import mpicoll

    on_host, on_gpu = _codec(name), _codec(name)
    worst, same = 0.0, True
    for step in range(3):
        want = mpicoll.compressed_allreduce(x * (step + 1), on_host, key="w")
        got = _host(mpicoll.compressed_allreduce(gx * (step + 1), on_gpu, key="w"))
        if not _same(got, want):
            same = False
            scale = max(float(np.max(np.abs(want))), 1e-30)
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))) / scale)
    return True if same else worst


def _mpi_allreduce(x: np.ndarray) -> np.ndarray:
    from mpi4py import MPI

    out = np.empty_like(x)
    MPI.COMM_WORLD.Allreduce(x, out)
    return out


def torch_parts(results: Results, device_name: str = "cuda") -> None:
    """The torch adapter with CUDA parameters (``"cpu"``: the stand-in run), two ranks sharing the GPU."""
    try:
        import torch
    except ImportError as exc:
        results.append(("torch", f"skipped: {exc}"))
        return
    if device_name == "cuda" and not torch.cuda.is_available():
        results.append(("torch", "skipped: torch sees no CUDA device"))
        return
    import torch.distributed as dist

    import mpicoll
    import mpicoll.torch as mt

    rank, device = mpicoll.rank(), torch.device(device_name)
    gen = torch.Generator().manual_seed(100 + rank)
    data, target = torch.randn(64, 256, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    data[:, :8] = 0  # inputs that never vary: their weights' gradients are 0, so OneBitAdam masks them

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).to(device)

    def backward(m: torch.nn.Module) -> None:
        torch.nn.functional.cross_entropy(m(data.to(device)), target.to(device)).backward()

    def averaged_on_host() -> list[np.ndarray]:
        m = model()
        backward(m)
        return [mpicoll.allreduce(p.grad.cpu().numpy()) / np.float32(2) for p in m.parameters()]

    want = averaged_on_host()

    def grads_match(m: torch.nn.Module) -> float:
        return max(float(np.max(np.abs(p.grad.cpu().numpy() - w))) for p, w in zip(m.parameters(), want, strict=True))

    def distributed_optimizer() -> float:
        m = model()
        opt = mt.DistributedOptimizer(torch.optim.SGD(m.parameters(), lr=0.1), m.named_parameters())
        backward(m)
        opt.synchronize()
        return grads_match(m)

    record(results, "torch DistributedOptimizer CUDA grads, max |diff| to host", distributed_optimizer)

    dist.init_process_group("mpicoll")
    try:
        def ddp() -> float:
            m = torch.nn.parallel.DistributedDataParallel(model())
            backward(m)
            return grads_match(m.module)

        record(results, "torch DDP on 'mpicoll' CUDA grads, max |diff| to host", ddp)

        def ddp_hook() -> bool:
            from mpicoll import compression

            m = torch.nn.parallel.DistributedDataParallel(model())
            m.register_comm_hook(mt.HookState(compression.ErrorFeedback(compression.get("topk", ratio=0.01))),
                                 mt.allreduce_hook)
            opt = torch.optim.SGD(m.parameters(), lr=0.05)
            for _ in range(4):  # past the hook's uncompressed first iterations
                opt.zero_grad()
                backward(m)
                opt.step()
            return _equal_on_ranks(m.module)

        record(results, "torch DDP top-k hook on CUDA: parameters equal on both ranks", ddp_hook)

        def one_bit_adam() -> bool:
            m = model()
            opt = mt.OneBitAdam(m.parameters(), lr=1e-3, freeze_step=2)
            for _ in range(5):  # two dense warm-up steps, then compressed
                opt.zero_grad()
                backward(m)
                opt.step()
            return _equal_on_ranks(m) and all(bool(torch.isfinite(p).all()) for p in m.parameters())

        record(results, "torch OneBitAdam on CUDA: parameters equal on both ranks", one_bit_adam)
    finally:
        import gc

        gc.collect()
        dist.destroy_process_group()


def _equal_on_ranks(m: Any) -> bool:
    from mpi4py import MPI

    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in m.parameters())).hexdigest()
    return len(set(MPI.COMM_WORLD.allgather(digest))) == 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU: every part on host memory (NumPy arrays, CPU tensors) in place of the GPU")
    args = parser.parse_args(argv)
    import mpicoll

    results: Results = []
    if args.dry_run:
        collectives(results, np)
        torch_parts(results, "cpu")
    else:
        record(results, "cupy sees a GPU", lambda: _cupy_device_count() > 0)
        if results[-1][1] is True:
            import cupy

            collectives(results, cupy)
            torch_parts(results, "cuda")
    if mpicoll.rank() == 0:
        sys.stdout.write("GPU_RANKS " + json.dumps(results) + "\n")
        sys.stdout.flush()
    return 0


def _cupy_device_count() -> int:
    import cupy

    return int(cupy.cuda.runtime.getDeviceCount())


if __name__ == "__main__":
    sys.exit(main())
