"""Helpers for the PyTorch tests that run on every rank: a small model, reproducible batches, and
single-process references that data-parallel training must equal."""

from __future__ import annotations

from collections.abc import Callable

import torch
from mpitools import assert_all, assert_equal_all

PER_RANK = 6


#: the tensors the optimizer tests train (test_optim, test_momentum_correction, test_zero_one_adam)
SHAPES = [(6, 5), (5,), (3, 6)]


def initial() -> list[torch.Tensor]:
    """Starting values of the :data:`SHAPES` tensors, the same on every rank."""
    g = torch.Generator().manual_seed(7)
    return [torch.randn(s, generator=g) for s in SHAPES]


def grads(step: int, rank: int, zero_rows: bool = False) -> list[torch.Tensor]:
    """Rank ``rank``'s integer-valued gradients at ``step`` (exact in float32 sums); with
    ``zero_rows`` one "unused embedding row" whose gradient is always zero on every rank."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    out = [torch.randint(-8, 9, s, generator=g).float() for s in SHAPES]
    if zero_rows:
        out[0][2] = 0
    return out


def model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def global_batch(step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(PER_RANK * size, 5, generator=g), torch.randint(0, 3, (PER_RANK * size,), generator=g)


def mine(batch: tuple[torch.Tensor, torch.Tensor], rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(t[rank * PER_RANK: (rank + 1) * PER_RANK] for t in batch)


def loss_of(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return torch.nn.functional.cross_entropy(net(x), y)


def train_ddp_with_hook(state: object, hook: Callable, steps: int, size: int, rank: int,
                        momentum: float = 0.0) -> torch.nn.Module:
    """DDP around ``model(seed=0)`` with the comm hook ``hook(state, bucket)``: ``steps`` SGD steps
    (lr 0.1) on this rank's slice of each global batch. Returns the trained module."""
    net = model(seed=0)
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=momentum)
    for step in range(steps):
        opt.zero_grad()
        x, y = mine(global_batch(step, size), rank)
        torch.nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
    return net


def rank_grads(net: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
    """The gradients one rank computes on ``batch`` (``net``'s own grads are left zeroed)."""
    net.zero_grad()
    loss_of(net, batch).backward()
    grads = [p.grad.detach().clone() for p in net.parameters()]
    net.zero_grad()
    return grads


def reference(steps: int, size: int, active: Callable[[int], list[int]] | None = None,
              make_opt: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None,
              after_step: Callable[[torch.optim.Optimizer], None] | None = None) -> list[torch.Tensor]:
    """One process plays every rank: each step averages the gradients of the ranks in
    ``active(step)`` (default: all), each on its slice of the global batch."""
    net = model(seed=0)
    opt = make_opt(net) if make_opt else torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        ranks = active(step) if active else list(range(size))
        if not ranks:
            break
        per_rank = [rank_grads(net, mine(global_batch(step, size), r)) for r in ranks]
        for i, p in enumerate(net.parameters()):
            p.grad = sum(g[i] for g in per_rank) / len(ranks)
        opt.step()
        if after_step:
            after_step(opt)
    return [p.detach().clone() for p in net.parameters()]


def assert_identical_and_close(comm, params, want: list[torch.Tensor], rtol: float = 1e-5,
                               atol: float = 1e-6) -> None:
    """Collective: every rank holds the same bits, and they match the single-process reference."""
    for i, (p, w) in enumerate(zip(params, want, strict=True)):
        p, w = p.detach(), w.detach()
        mine_ = p.numpy()
        assert_equal_all(comm.mpi, mine_, comm.mpi.bcast(mine_, root=0), f"param {i} across ranks")
        ok = bool(torch.allclose(p, w, rtol=rtol, atol=atol))
        assert_all(comm.mpi, ok, f"param {i} differs from single-process training by {float((p - w).abs().max()):.3g}")
