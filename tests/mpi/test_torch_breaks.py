"""Issue 13, breaks 1 and 8, kept fixed: broadcast_parameters of a plain list of tensors (first
dimension 2 included), and DistributedOptimizer steps where a rank or every rank has no gradient."""

from __future__ import annotations

import pytest
from mpitools import assert_all, assert_equal_all

torch = pytest.importorskip("torch")
from torchtools import assert_identical_and_close, global_batch, loss_of, mine, model, rank_grads  # noqa: E402

import mpicoll  # noqa: E402
import mpicoll.torch as mt  # noqa: E402


def pairs_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # first dimensions of 2 everywhere: what a (name, tensor) pair looks like
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))


def assert_like_root(comm, net, root_net, what):
    for i, (p, want) in enumerate(zip(net.state_dict().values(), root_net.state_dict().values(), strict=True)):
        assert_equal_all(comm.mpi, p.detach().numpy(), want.detach().numpy(), f"{what}: tensor {i}")


@pytest.mark.parametrize("form", ["list", "named", "generator", "dict", "module"])
def test_broadcast_parameters_takes_lists_of_tensors_and_named_pairs(comm, form):
    root = comm.size - 1
    net = pairs_net(seed=comm.rank)
    params = {"list": lambda: list(net.parameters()), "named": lambda: list(net.named_parameters()),
              "generator": lambda: net.parameters(), "dict": lambda: net.state_dict(), "module": lambda: net}[form]()
    mt.broadcast_parameters(params, root, comm=comm)
    root_net = pairs_net(seed=root)
    if form in ("list", "named", "generator"):  # parameters only: the buffers stay this rank's
        for a, b in zip(net.parameters(), root_net.parameters(), strict=True):
            assert_equal_all(comm.mpi, a.detach().numpy(), b.detach().numpy(), form)
    else:
        assert_like_root(comm, net, root_net, form)


def test_broadcast_parameters_refuses_on_every_rank(comm):
    net = pairs_net(seed=0)
    bad = comm.rank == comm.size - 1
    params = [*net.parameters(), "oops"] if bad else list(net.parameters())
    error = mpicoll.ArgumentError if bad else mpicoll.PeerError
    with pytest.raises(error):
        mt.broadcast_parameters(params, 0, comm=comm)
    if comm.size > 1:
        params = list(net.parameters())[: 2 if bad else 3]
        with pytest.raises(mpicoll.MismatchError):
            mt.broadcast_parameters(params, 0, comm=comm)


def test_a_rank_without_gradients_still_takes_part(comm):
    """The last rank runs no backward pass in step 1; every rank must still finish every step, with
    that rank's contribution zero (the average stays over all ranks, as under DDP)."""
    net = model(seed=0)
    opt = mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), net.named_parameters(),
                                  bucket_bytes=64, comm=comm)
    idle = comm.size - 1
    for step in range(3):
        opt.zero_grad()
        if not (step == 1 and comm.rank == idle):
            loss_of(net, mine(global_batch(step, comm.size), comm.rank)).backward()
        opt.step()
    opt.remove_hooks()
    ref = model(seed=0)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for step in range(3):
        ranks = [r for r in range(comm.size) if not (step == 1 and r == idle)]
        per_rank = [rank_grads(ref, mine(global_batch(step, comm.size), r)) for r in ranks]
        if ranks:
            for i, p in enumerate(ref.parameters()):
                p.grad = sum(g[i] for g in per_rank) / comm.size
        ref_opt.step()
        ref_opt.zero_grad()
    assert_identical_and_close(comm, net.parameters(), list(ref.parameters()))


class Branchy(torch.nn.Module):
    """``unused`` is used by no rank; ``first`` only by rank 0 (through its data)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body, self.first, self.unused = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)

    def forward(self, x: torch.Tensor, rank: int) -> torch.Tensor:
        return self.body(x) + (self.first(x) if rank == 0 else 0)


def test_parameters_no_rank_used_get_none_and_do_not_move(comm):
    net = Branchy()
    opt = mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1),
                                  net.named_parameters(), comm=comm)
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    for step in range(3):
        opt.zero_grad()
        x, y = mine(global_batch(step, comm.size), comm.rank)
        torch.nn.functional.cross_entropy(net(x, comm.rank), y).backward()
        opt.step()
        assert_all(comm.mpi, net.unused.weight.grad is None and net.unused.bias.grad is None,
                   "a parameter no rank used got a gradient")
        assert_all(comm.mpi, net.first.weight.grad is not None, "rank 0's parameter got no average elsewhere")
    opt.remove_hooks()
    for name, p in net.named_parameters():
        values = p.detach().numpy()
        assert_equal_all(comm.mpi, values, comm.mpi.bcast(values, root=0), name)
        moved = not torch.equal(p.detach(), start[name])
        assert_all(comm.mpi, moved == (not name.startswith("unused")), f"{name} moved={moved}")
