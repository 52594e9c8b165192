"""The PyTorch adapter under real MPI: equivalence with single-process training, DDP hook, state."""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import assert_all, assert_equal_all

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
from torchtools import assert_identical_and_close, global_batch, mine, model, train_ddp_with_hook  # noqa: E402

import mpicoll  # noqa: E402
import mpicoll.torch as mt  # noqa: E402
from mpicoll import compression  # noqa: E402

STEPS = 4


@pytest.fixture(scope="module")
def process_group(comm):
    mt.init_process_group()
    yield
    dist.destroy_process_group()


def reference(steps: int, size: int, passes: int = 1) -> list[torch.Tensor]:
    """One process, the whole global batch per step: what data-parallel training must equal."""
    net = model(seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for step in range(steps):
        opt.zero_grad()
        for micro in range(passes):
            x, y = global_batch(passes * step + micro, size)
            (torch.nn.functional.cross_entropy(net(x), y) / passes).backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


def assert_matches_reference(comm, net: torch.nn.Module, want: list[torch.Tensor]) -> None:
    assert_identical_and_close(comm, net.parameters(), want)


@pytest.mark.parametrize("passes", [1, 2])
def test_distributed_optimizer_equals_single_process_training(comm, passes):
    net = model(seed=comm.rank)  # different everywhere: broadcast_parameters must fix it
    mt.broadcast_parameters(net, root=0, comm=comm)
    opt = mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), net.named_parameters(),
                                  backward_passes_per_step=passes, bucket_bytes=64, comm=comm)
    assert len(opt.buckets.buckets) > 1  # several buckets, so launch order and unpacking are exercised
    for step in range(STEPS):
        opt.zero_grad()
        for micro in range(passes):
            x, y = mine(global_batch(passes * step + micro, comm.size), comm.rank)
            (torch.nn.functional.cross_entropy(net(x), y) / passes).backward()
        opt.step()
    opt.remove_hooks()
    assert_matches_reference(comm, net, reference(STEPS, comm.size, passes))


def test_a_short_accumulation_is_still_averaged(comm):
    """backward_passes_per_step=2 but only one pass before step(): the gradient must still be the
    average over ranks (one micro-batch, loss / 2), not each rank's own."""
    net = model(seed=0)
    opt = mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), net.named_parameters(),
                                  backward_passes_per_step=2, comm=comm)
    x, y = mine(global_batch(0, comm.size), comm.rank)
    (torch.nn.functional.cross_entropy(net(x), y) / 2).backward()
    opt.step()
    opt.remove_hooks()
    ref = model(seed=0)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    xs, ys = global_batch(0, comm.size)
    (torch.nn.functional.cross_entropy(ref(xs), ys) / 2).backward()
    ref_opt.step()
    assert_matches_reference(comm, net, [p.detach() for p in ref.parameters()])


def test_ddp_comm_hook_equals_single_process_training(comm, process_group):
    net = train_ddp_with_hook(mt.HookState(comm=comm), mt.allreduce_hook, STEPS, comm.size, comm.rank, momentum=0.9)
    assert_matches_reference(comm, net, reference(STEPS, comm.size))


def test_compressed_ddp_hook_keeps_ranks_identical(comm, process_group):
    state = mt.HookState(compression.ErrorFeedback(compression.get("topk", ratio=0.3)), comm=comm)
    net = train_ddp_with_hook(state, mt.allreduce_hook, STEPS, comm.size, comm.rank)
    assert state.iteration == STEPS
    assert_all(comm.mpi, bool(state.compressor.residuals), "error feedback kept residuals")
    for p in net.parameters():
        assert_equal_all(comm.mpi, p.detach().numpy(), comm.mpi.bcast(p.detach().numpy(), root=0))


def test_error_feedback_state_travels_with_the_optimizer_state_dict(comm):
    net = model(seed=0)
    make = lambda: mt.DistributedOptimizer(  # noqa: E731
        torch.optim.SGD(net.parameters(), lr=0.1), net.named_parameters(),
        compressor=compression.ErrorFeedback(compression.get("topk", ratio=0.2)), comm=comm)
    opt = make()
    x, y = mine(global_batch(0, comm.size), comm.rank)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    saved = opt.state_dict()
    opt.remove_hooks()
    assert "mpicoll" in saved and saved["mpicoll"]["residuals"]
    fresh = make()
    fresh.load_state_dict(saved)
    fresh.remove_hooks()
    for key, residual in opt.compressor.residuals.items():
        np.testing.assert_array_equal(fresh.compressor.residuals[key], residual)


def test_broadcast_optimizer_state(comm):
    net = model(seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for p in net.parameters():
        p.grad = torch.full_like(p, float(comm.rank + 1))
    opt.step()  # momentum buffers now differ by rank
    mt.broadcast_optimizer_state(opt, root=comm.size - 1, comm=comm)
    for state in opt.state_dict()["state"].values():
        buf = state["momentum_buffer"].numpy()
        assert_equal_all(comm.mpi, buf, np.full_like(buf, comm.size))


def test_bfloat16_is_refused_with_advice():
    with pytest.raises(mpicoll.DtypeError, match="cast to float32"):
        mt.as_array(torch.zeros(3, dtype=torch.bfloat16))
