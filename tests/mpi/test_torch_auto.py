"""compressor="auto" in the PyTorch adapter: DistributedOptimizer and the DDP hook take the cost
model's codec per bucket, the same on every rank; on a fast link that is no compression at all."""

from __future__ import annotations

import pytest
from mpitools import assert_all, assert_equal_all

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
from torchtools import assert_identical_and_close, global_batch, mine, model, reference, train_ddp_with_hook  # noqa: E402

import mpicoll.torch as mt  # noqa: E402
from mpicoll.aggregation import AutoCodec  # noqa: E402
from mpicoll.model import CodecRates, Link, Machine  # noqa: E402

STEPS = 4


def machine(gbit: float) -> Machine:
    link = Link(50e-6, 8e-9 / gbit)
    return Machine({"intra": link, "inter": link}, gamma=1 / 5e9, flops=2e10,
                   codecs={"fp16": CodecRates("summable", 0.5, 2e9, 2e9, widen=2.0),
                           "powersgd": CodecRates("lowrank", 0.0, 1e30, 1e30, rank=4)})


def train(comm, opt_of, steps: int = STEPS) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    net = model(seed=0)
    opt = opt_of(net)
    for step in range(steps):
        opt.zero_grad()
        x, y = mine(global_batch(step, comm.size), comm.rank)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net, opt


def test_optimizer_on_a_fast_link_is_plain_data_parallel_training(comm):
    net, opt = train(comm, lambda net: mt.DistributedOptimizer(
        torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), net.named_parameters(),
        compressor=AutoCodec(model=machine(400.0)), comm=comm))
    opt.remove_hooks()
    assert_all(comm.mpi, set(opt.compressor.decisions.values()) == {"none"}, f"{opt.compressor.decisions}")
    assert_identical_and_close(comm, net.parameters(), reference(STEPS, comm.size))


def test_optimizer_on_a_slow_link_compresses_alike_everywhere_and_checkpoints(comm):
    auto = AutoCodec(["fp16"], model=machine(0.0001), margin=0.0)
    net, opt = train(comm, lambda net: mt.DistributedOptimizer(
        torch.optim.SGD(net.parameters(), lr=0.1), net.named_parameters(), compressor=auto, comm=comm))
    saved = opt.state_dict()
    opt.remove_hooks()
    if comm.size > 1:
        assert_all(comm.mpi, set(auto.decisions.values()) == {"fp16"}, f"decisions {auto.decisions}")
    for p in net.parameters():
        assert_equal_all(comm.mpi, p.detach().numpy(), comm.mpi.bcast(p.detach().numpy(), root=0))
    fresh = mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), net.named_parameters(),
                                    compressor="auto", comm=comm)
    fresh.load_state_dict(saved)
    fresh.remove_hooks()
    assert_all(comm.mpi, fresh.compressor.decisions == auto.decisions, "decisions restored from the checkpoint")


def test_ddp_hook_with_auto_keeps_ranks_identical(comm):
    mt.init_process_group()
    try:
        state = mt.HookState(AutoCodec(["fp16", "powersgd"], model=machine(0.0001), margin=0.0), comm=comm)
        net = train_ddp_with_hook(state, mt.allreduce_hook, STEPS, comm.size, comm.rank)
        decided = comm.mpi.allgather(sorted(state.compressor.decisions.items()))
        assert_all(comm.mpi, all(d == decided[0] for d in decided) and decided[0], f"decisions {decided}")
        for p in net.parameters():
            assert_equal_all(comm.mpi, p.detach().numpy(), comm.mpi.bcast(p.detach().numpy(), root=0))
    finally:
        dist.destroy_process_group()
