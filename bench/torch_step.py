"""``mpicoll-bench torch-step``: time per training step, mpicoll against DDP's own gloo all-reduce.

Every variant trains its own copy of the same MLP on the same batches, in one process, measured
side by side: rounds interleave the variants, and each reports the median over rounds of its mean
step time (forward, backward, gradient all-reduce, optimizer step). Variants:

- ``ddp-gloo``: ``DistributedDataParallel`` with its built-in gloo all-reduce (the baseline);
- ``ddp-on-mpicoll``: stock DDP on the ``"mpicoll"`` torch.distributed backend (only the backend
  string differs from ``ddp-gloo``; its process group is ``new_group(backend="mpicoll")``);
- ``ddp-mpicoll``: the gloo DDP with mpicoll's communication hook, once per ``--compressor``;
- ``optimizer``: no DDP, :class:`mpicoll.torch.DistributedOptimizer`, once per ``--compressor``.

``--compressor none,fp16,powersgd,auto`` measures each fixed choice and ``auto`` (the cost model's
choice per bucket, see :mod:`mpicoll.aggregation.autocodec`) in the same run; ``--only`` keeps
only the variants whose names start with the given prefixes (e.g. ``ddp-gloo,optimizer``).

Needs torch (``pip install 'mpicoll[torch]'``); it is the only benchmark that imports it.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from mpicoll.transport import Comm

from .harness import meta, say


def add_parser(sub: Any) -> None:
    """Register the ``torch-step`` subcommand."""
    p = sub.add_parser("torch-step", help="training step time: mpicoll vs DDP's gloo all-reduce (needs torch)")
    p.add_argument("--hidden", type=int, default=1024, help="MLP width (default 1024)")
    p.add_argument("--layers", type=int, default=4, help="hidden layers (default 4)")
    p.add_argument("--batch", type=int, default=32, help="samples per rank and step (default 32)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant and round (default 10)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; each variant reports its median (default 5)")
    p.add_argument("--compressor", default="none",
                   help="comma-separated: none, fp16, topk (1%% + EF), sign (+ EF), powersgd (rank 4 + EF) or auto "
                        "(the cost model's choice per bucket); each gets its hook and optimizer variants")
    p.add_argument("--only", default="", help="keep only variants whose names start with these comma-separated "
                                              "prefixes (default: all)")
    p.add_argument("--bucket-mb", type=float, default=25.0, help="DDP bucket_cap_mb and our bucket size")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def _compressor(name: str) -> Any:
    from mpicoll import compression
    from mpicoll.aggregation import AutoCodec

    # AutoCodec() is what compressor="auto" makes; built here so the run can report its decisions
    return {"none": lambda: None, "auto": lambda: AutoCodec(), "fp16": lambda: compression.get("fp16"),
            "topk": lambda: compression.ErrorFeedback(compression.get("topk", ratio=0.01)),
            "sign": lambda: compression.ErrorFeedback(compression.get("sign")),
            "powersgd": lambda: compression.ErrorFeedback(compression.get("powersgd", rank=4))}[name]()


def _variants(args: argparse.Namespace, torch: Any, mt: Any,
              autos: dict[str, Any] | None = None) -> dict[str, Callable[[Any, Any], None]]:
    """name -> one training step ``step(x, y)``; ``autos`` gets each ``auto`` variant's AutoCodec."""
    def mlp() -> Any:
        torch.manual_seed(0)
        layers: list[Any] = [torch.nn.Linear(64, args.hidden), torch.nn.ReLU()]
        for _ in range(args.layers - 1):
            layers += [torch.nn.Linear(args.hidden, args.hidden), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers, torch.nn.Linear(args.hidden, 10))

    def stepper(net: Any, opt: Any) -> Callable[[Any, Any], None]:
        def step(x: Any, y: Any) -> None:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return step

    ddp = {"bucket_cap_mb": args.bucket_mb}
    gloo = torch.nn.parallel.DistributedDataParallel(mlp(), **ddp)
    backend = torch.nn.parallel.DistributedDataParallel(
        mlp(), process_group=torch.distributed.new_group(backend="mpicoll"), **ddp)
    variants = {"ddp-gloo": stepper(gloo, torch.optim.SGD(gloo.parameters(), lr=0.01)),
                "ddp-on-mpicoll": stepper(backend, torch.optim.SGD(backend.parameters(), lr=0.01))}
    for name in [c.strip() for c in args.compressor.split(",") if c.strip()]:
        suffix = "" if name == "none" else f" {name}"
        hooked = torch.nn.parallel.DistributedDataParallel(mlp(), **ddp)
        codecs = {f"ddp-mpicoll{suffix}": _compressor(name), f"optimizer{suffix}": _compressor(name)}
        hooked.register_comm_hook(mt.HookState(codecs[f"ddp-mpicoll{suffix}"]), mt.allreduce_hook)
        variants[f"ddp-mpicoll{suffix}"] = stepper(hooked, torch.optim.SGD(hooked.parameters(), lr=0.01))
        plain = mlp()
        wrapped = mt.DistributedOptimizer(torch.optim.SGD(plain.parameters(), lr=0.01), plain.named_parameters(),
                                          compressor=codecs[f"optimizer{suffix}"],
                                          bucket_bytes=int(args.bucket_mb * 2**20))
        variants[f"optimizer{suffix}"] = stepper(plain, wrapped)
        if name == "auto" and autos is not None:
            autos.update(codecs)
    keep = [p.strip() for p in args.only.split(",") if p.strip()]
    return {k: v for k, v in variants.items() if not keep or k == "ddp-gloo" or any(k.startswith(p) for p in keep)}


def run_torch_step(args: argparse.Namespace, comm: Comm) -> int:
    """The subcommand: a table of ms per step and the ratio to ddp-gloo."""
    import torch

    import mpicoll.torch as mt

    torch.set_num_threads(1)
    mt.init_process_group("gloo")  # the baseline's default group; the mpicoll backend gets its own group
    autos: dict[str, Any] = {}
    variants = _variants(args, torch, mt, autos)
    params = sum(p.numel() for p in torch.nn.Linear(64, args.hidden).parameters()) + \
        (args.layers - 1) * (args.hidden * args.hidden + args.hidden) + args.hidden * 10 + 10
    g = torch.Generator().manual_seed(comm.rank)
    x, y = torch.rand(args.batch, 64, generator=g), torch.randint(0, 10, (args.batch,), generator=g)
    run_meta = meta(comm)
    say(comm, f"# mpicoll-bench torch-step: MLP 64-{args.hidden}x{args.layers}-10 ({params / 1e6:.2f} M parameters, "
              f"{4 * params / 2**20:.1f} MiB of gradients), batch {args.batch} per rank, {comm.size} ranks, "
              f"torch {torch.__version__}, {run_meta['mpi_library']}")
    times: dict[str, list[float]] = {name: [] for name in variants}
    for step in variants.values():  # warm-up: buckets built, kernels compiled, compression started
        for _ in range(3):
            step(x, y)
    for _ in range(args.rounds):
        for name, step in variants.items():
            comm.mpi.Barrier()
            start = time.perf_counter()
            for _ in range(args.steps):
                step(x, y)
            times[name].append(comm.mpi.allreduce(time.perf_counter() - start, op=_max()) / args.steps)
    baseline = statistics.median(times["ddp-gloo"])
    rows = [{"variant": name, "ms_per_step": 1e3 * statistics.median(t), "vs_ddp_gloo": statistics.median(t) / baseline}
            for name, t in times.items()]
    for r in rows:  # what auto chose per bucket, and the predictions it chose by (ms)
        codec = autos.get(r["variant"])
        if codec is not None:
            r["auto_chose"] = {str(k): v for k, v in codec.decisions.items()}
            r["auto_predicted_ms"] = {str(k): {c: 1e3 * t for c, t in p.items()} for k, p in codec.predictions.items()}
    say(comm, f"{'variant':>24} {'ms/step':>10} {'vs ddp-gloo':>12}")
    for r in rows:
        chose = f"  chose {sorted(set(r['auto_chose'].values()))}" if r.get("auto_chose") else ""
        say(comm, f"{r['variant']:>24} {r['ms_per_step']:10.2f} {r['vs_ddp_gloo']:12.2f}{chose}")
    if args.json and comm.rank == 0:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"meta": run_meta, "parameters": params, "results": rows}, fh, indent=1)
            fh.write("\n")
    # the DDP objects (reached from the steps) hold the process groups through reference cycles:
    # collect them while Python is alive, or gloo's worker threads outlive destroy_process_group
    # and may abort the exit (see examples/ddp_stock.py)
    variants.clear()
    step = None  # drops the last step the loops bound
    gc.collect()
    torch.distributed.destroy_process_group()
    return 0


def _max() -> Any:
    from mpi4py import MPI

    return MPI.MAX
