"""Uneven inputs: ranks with fewer batches join, shadow the others' rounds, and every rank finishes
with the model that averaging over the ranks still training gives."""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import assert_all, assert_equal_all

torch = pytest.importorskip("torch")
from torchtools import assert_identical_and_close, global_batch, loss_of, mine, model, reference  # noqa: E402

import mpicoll.torch as mt  # noqa: E402
from mpicoll import compression  # noqa: E402

STEPS = 6


def batches_of(rank: int, size: int, fewer: str) -> int:
    if fewer == "one":  # one rank (the first) has two batches fewer than the others
        return STEPS - 2 if size > 1 and rank == 0 else STEPS
    return STEPS - (size - 1 - rank)  # every rank a different number: rank 0 fewest, the last rank all


@pytest.mark.parametrize("fewer", ["one", "staircase"])
def test_uneven_batches_finish_with_averages_over_the_ranks_still_training(comm, fewer):
    net = model(seed=comm.rank)
    mt.broadcast_parameters(net, root=0, comm=comm)
    opt = mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), net.named_parameters(),
                                  bucket_bytes=64, comm=comm)
    mine_count = batches_of(comm.rank, comm.size, fewer)
    with opt.join() as join:
        for step in range(mine_count):
            opt.zero_grad()
            loss_of(net, mine(global_batch(step, comm.size), comm.rank)).backward()
            opt.step()
    opt.remove_hooks()
    counts = [batches_of(r, comm.size, fewer) for r in range(comm.size)]
    assert_all(comm.mpi, join.last_rank == counts.index(max(counts)), f"last rank {join.last_rank}")
    assert_all(comm.mpi, opt.steps == max(counts), f"steps {opt.steps}")
    want = reference(STEPS, comm.size, active=lambda step: [r for r in range(comm.size) if step < counts[r]])
    assert_identical_and_close(comm, net.parameters(), want)
    for key, state in sorted(opt.state_dict()["state"].items()):  # momentum synced to the joined ranks too
        buf = state["momentum_buffer"].numpy()
        assert_equal_all(comm.mpi, buf, comm.mpi.bcast(buf, root=0), f"momentum {key}")


def test_join_with_compression_and_accumulation_finishes_identically(comm):
    net = model(seed=0)
    opt = mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.05), net.named_parameters(),
                                  compressor=compression.ErrorFeedback(compression.get("topk", ratio=0.3)),
                                  backward_passes_per_step=2, comm=comm)
    micro = 2 * STEPS - comm.rank  # odd on odd ranks: their last step is a short accumulation
    with opt.join():
        for i in range(micro):
            if i % 2 == 0:
                opt.zero_grad()
            (loss_of(net, mine(global_batch(i, comm.size), comm.rank)) / 2).backward()
            if i % 2 == 1:
                opt.step()
    opt.remove_hooks()
    for i, p in enumerate(net.parameters()):
        values = p.detach().numpy()
        assert_equal_all(comm.mpi, values, comm.mpi.bcast(values, root=0), f"param {i}")


def test_even_batches_join_at_once_and_change_nothing(comm):
    net = model(seed=0)
    opt = mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), net.named_parameters(), comm=comm)
    with opt.join() as join:
        for step in range(2):
            opt.zero_grad()
            loss_of(net, mine(global_batch(step, comm.size), comm.rank)).backward()
            opt.step()
    before = [p.detach().clone() for p in net.parameters()]
    assert join.last_rank == 0
    assert opt.shadow() == 0  # a second join with nobody training: one agreement, nothing moves
    opt.remove_hooks()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert_identical_and_close(comm, net.parameters(), reference(2, comm.size, make_opt=lambda n: torch.optim.SGD(
        n.parameters(), lr=0.1)))


def test_a_joined_rank_keeps_its_own_grads_untouched(comm):
    net = model(seed=0)
    opt = mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), net.named_parameters(), comm=comm)
    with opt.join():
        for step in range(1 if comm.rank == 0 else 3):
            opt.zero_grad()
            loss_of(net, mine(global_batch(step, comm.size), comm.rank)).backward()
            opt.step()
        if comm.rank == 0:
            mark = [p.grad.detach().clone() for p in net.parameters()]
    if comm.rank == 0:  # its last averaged gradients are what it left; the shadowing used scratch zeros
        ok = all(torch.equal(a, p.grad) for a, p in zip(mark, net.parameters(), strict=True))
    else:
        ok = True
    opt.remove_hooks()
    assert_all(comm.mpi, ok, "rank 0's grads changed while it shadowed")
    assert_equal_all(comm.mpi, np.int64(opt.steps), np.int64(1 if comm.size == 1 else 3))
