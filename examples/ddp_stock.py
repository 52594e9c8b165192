"""A stock PyTorch DDP training script in which mpicoll is nothing but the backend string.

    mpiexec -n 4 python examples/ddp_stock.py --backend mpicoll
    mpiexec -n 4 python examples/ddp_stock.py --backend gloo     # the very same script on gloo

The one mpicoll line is ``import mpicoll.torch``: it registers the ``"mpicoll"`` backend and
lets ``init_process_group`` take rank and world size from MPI (no MASTER_ADDR), for gloo too.
Variants (``--variants``, each trains a fresh copy of the model on the same batches):

- ``plain``: DDP as it comes;
- ``join``: rank 0 has one batch fewer than the others; torch's ``Join`` context lets it shadow
  the others' all-reduces so that every rank finishes;
- ``hook``, ``hook-fp16``: DDP with mpicoll's communication hook, uncompressed or fp16.

At the end every rank checks that all ranks hold the same parameters (exit code 1 otherwise);
``--out`` saves rank 0's parameters per variant (``torch.save``).
"""

from __future__ import annotations

import argparse
import gc
import sys

import torch
import torch.distributed as dist
from torch.distributed.algorithms import Join
from torch.nn.parallel import DistributedDataParallel

import mpicoll.torch as mt  # registers the "mpicoll" backend
from mpicoll import compression  # only for the hook variants


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                               torch.nn.Linear(64, 5))


def batches(rank: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches: its own, the same whatever the backend."""
    g = torch.Generator().manual_seed(1000 + rank)
    return [(torch.randn(16, 20, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(steps)]


def train(variant: str, steps: int) -> torch.nn.Module:
    rank = dist.get_rank()
    net = model()
    ddp = DistributedDataParallel(net, bucket_cap_mb=0.01)  # several buckets
    if variant.startswith("hook"):
        compressor = {"hook": None, "hook-fp16": compression.get("fp16")}[variant]
        ddp.register_comm_hook(mt.HookState(compressor), mt.allreduce_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    mine = batches(rank, steps - 1 if variant == "join" and rank == 0 else steps)
    with Join([ddp], enable=variant == "join"):
        for x, y in mine:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
    return net


def same_everywhere(net: torch.nn.Module) -> bool:
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    copies = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(copies, flat)
    return all(torch.equal(c, flat) for c in copies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="mpicoll")
    parser.add_argument("--variants", default="plain", help="comma-separated: plain, join, hook, hook-fp16")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", help="save rank 0's parameters per variant here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group(args.backend)
    results = {}
    for variant in args.variants.split(","):
        net = train(variant, args.steps)
        if not same_everywhere(net):
            sys.stderr.write(f"rank {dist.get_rank()}: parameters differ across ranks ({variant})\n")
            return 1
        results[variant] = {name: p.detach().clone() for name, p in net.named_parameters()}
    if args.out and dist.get_rank() == 0:
        torch.save(results, args.out)
    # DDP objects hold the process group through reference cycles. Collected only at interpreter
    # exit, they keep gloo's worker threads alive past destroy_process_group, and a worker that
    # releases the last collective's tensors then needs the GIL while Python finalizes: "terminate
    # called without an active exception" in ~1 run of 20 (gdb: ProcessGroupGloo::runLoop ->
    # ~AsyncAllgatherWork -> decref -> take_gil -> pthread_exit). Collect them while Python is alive.
    gc.collect()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
