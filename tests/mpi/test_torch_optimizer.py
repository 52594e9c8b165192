"""DistributedOptimizer as a real torch.optim.Optimizer: LR schedulers, GradScaler, state_dict round
trips, param groups, zero_grad, gradient_predivide_factor and op="sum", under real MPI."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from mpitools import assert_all, assert_equal_all

torch = pytest.importorskip("torch")
from torchtools import (  # noqa: E402
    assert_identical_and_close,
    global_batch,
    loss_of,
    mine,
    model,
    reference,
)

import mpicoll  # noqa: E402
import mpicoll.torch as mt  # noqa: E402
from mpicoll import compression  # noqa: E402

STEPS = 4


def distributed(comm, net, opt=None, **kwargs):
    opt = opt or torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    return mt.DistributedOptimizer(opt, net.named_parameters(), comm=comm, bucket_bytes=64, **kwargs)


def train(comm, net, opt, steps, start=0, scheduler=None):
    for step in range(start, start + steps):
        opt.zero_grad()
        loss_of(net, mine(global_batch(step, comm.size), comm.rank)).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def test_it_is_an_optimizer_sharing_the_wrapped_ones_groups_and_state(comm):
    net = model(0)
    inner = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    opt = distributed(comm, net, inner)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state and opt.defaults is inner.defaults
    train(comm, net, opt, 1)
    assert opt.state is inner.state and len(inner.state) == 4  # momentum buffers, one per parameter
    opt.load_state_dict(opt.state_dict())  # torch replaces the groups' list: still shared after it
    opt.param_groups[0]["lr"] = 0.5
    assert inner.param_groups[0]["lr"] == 0.5
    opt.remove_hooks()


@pytest.mark.parametrize("schedule", ["step", "onecycle"])
def test_lr_schedulers_accept_it_and_training_equals_single_process(comm, schedule):
    def make(opt):
        if schedule == "step":
            return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=STEPS)

    net = model(0)
    opt = distributed(comm, net)
    scheduler = make(opt)  # raised TypeError before DistributedOptimizer was an Optimizer
    train(comm, net, opt, STEPS, scheduler=scheduler)
    opt.remove_hooks()
    ref_scheduler = []
    want = reference(STEPS, comm.size, make_opt=lambda n: _with_scheduler(n, make, ref_scheduler),
                     after_step=lambda o: ref_scheduler[0].step())
    assert_identical_and_close(comm, net.parameters(), want)
    assert scheduler.get_last_lr() == ref_scheduler[0].get_last_lr()


def _with_scheduler(net, make, out):
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    out.append(make(opt))
    return opt


def test_grad_scaler_unscales_the_averaged_gradients_and_skips_infs_everywhere(comm):
    net = model(0)
    opt = distributed(comm, net)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    for step in range(STEPS):
        opt.zero_grad()
        loss = loss_of(net, mine(global_batch(step, comm.size), comm.rank))
        if step == 1 and comm.rank == comm.size - 1:
            loss = loss * float("inf")  # one rank overflows: every rank must skip this step
        before = [p.detach().clone() for p in net.parameters()]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        moved = any(not torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
        assert_all(comm.mpi, moved == (step != 1), f"step {step}: moved={moved}")
    assert_equal_all(comm.mpi, np.float64(scaler.get_scale()), np.float64(2.0 ** 11), "scale after one overflow")
    opt.remove_hooks()
    # the skipped step is step 1: the reference takes steps 0, 2, 3
    net_ref = model(0)
    ref_opt = torch.optim.SGD(net_ref.parameters(), lr=0.1, momentum=0.9)
    for step in (0, 2, 3):
        ref_opt.zero_grad()
        loss_of(net_ref, global_batch(step, comm.size)).backward()
        ref_opt.step()
    assert_identical_and_close(comm, net.parameters(), list(net_ref.parameters()))


def test_grad_scaler_with_a_fused_optimizer(comm):
    net = model(0)
    try:
        inner = torch.optim.Adam(net.parameters(), lr=0.01, fused=True)
    except RuntimeError as exc:  # a build without the fused CPU kernels
        pytest.skip(str(exc))
    opt = distributed(comm, net, inner)
    assert opt._step_supports_amp_scaling
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    for step in range(2):
        opt.zero_grad()
        scaler.scale(loss_of(net, mine(global_batch(step, comm.size), comm.rank))).backward()
        scaler.step(opt)
        scaler.update()
    opt.remove_hooks()
    want = reference(2, comm.size, make_opt=lambda n: torch.optim.Adam(n.parameters(), lr=0.01, fused=True))
    assert_identical_and_close(comm, net.parameters(), want)


def test_state_dict_round_trip_with_residuals_and_scheduler(comm):
    def make(net):
        opt = distributed(comm, net, compressor=compression.ErrorFeedback(compression.get("topk", ratio=0.3)))
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)

    net = model(0)
    opt, scheduler = make(net)
    train(comm, net, opt, 2, scheduler=scheduler)
    # state_dict()s hold references to live tensors: copy them, as torch.save would
    saved = copy.deepcopy({"model": net.state_dict(), "opt": opt.state_dict(), "sched": scheduler.state_dict()})
    assert saved["opt"]["mpicoll"]["residuals"] and saved["opt"]["state"]
    train(comm, net, opt, 2, start=2, scheduler=scheduler)
    opt.remove_hooks()

    resumed = model(1)
    resumed.load_state_dict(saved["model"])
    opt2, scheduler2 = make(resumed)
    opt2.load_state_dict(saved["opt"])
    scheduler2.load_state_dict(saved["sched"])
    train(comm, resumed, opt2, 2, start=2, scheduler=scheduler2)
    opt2.remove_hooks()
    for a, b in zip(net.parameters(), resumed.parameters(), strict=True):
        assert_equal_all(comm.mpi, b.detach().numpy(), a.detach().numpy(), "resumed training")
    for key, residual in opt.compressor.residuals.items():
        assert_equal_all(comm.mpi, opt2.compressor.residuals[key], residual, f"residual {key}")


def test_zero_grad_set_to_none_or_zeros(comm):
    net = model(0)
    opt = distributed(comm, net)
    train(comm, net, opt, 1)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    train(comm, net, opt, 1, start=1)  # gradients accumulate into the kept zero tensors
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    opt.remove_hooks()
    assert_identical_and_close(comm, net.parameters(), reference(2, comm.size))


def test_add_param_group_trains_the_new_parameters_too(comm):
    torch.manual_seed(0)
    net = model(0)
    head = torch.nn.Linear(3, 3)
    torch.nn.init.eye_(head.weight)
    torch.nn.init.zeros_(head.bias)
    full = torch.nn.Sequential(net, head)
    opt = distributed(comm, net)  # the head is not in the optimizer yet
    opt.add_param_group({"params": list(head.parameters()), "lr": 0.05})
    assert len(opt.param_groups) == 2 and len(opt.buckets.arrays) == 6
    for step in range(2):
        opt.zero_grad()
        loss_of(full, mine(global_batch(step, comm.size), comm.rank)).backward()
        opt.step()
    opt.remove_hooks()
    ref_net, ref_head = model(0), torch.nn.Linear(3, 3)
    torch.nn.init.eye_(ref_head.weight)
    torch.nn.init.zeros_(ref_head.bias)
    ref = torch.nn.Sequential(ref_net, ref_head)
    ref_opt = torch.optim.SGD(ref_net.parameters(), lr=0.1, momentum=0.9)
    ref_opt.add_param_group({"params": list(ref_head.parameters()), "lr": 0.05})
    for step in range(2):
        ref_opt.zero_grad()
        loss_of(ref, global_batch(step, comm.size)).backward()
        ref_opt.step()
    assert_identical_and_close(comm, full.parameters(), list(ref.parameters()))


@pytest.mark.parametrize(("op", "factor"), [("sum", 1.0), ("avg", 4.0)])
def test_op_sum_and_gradient_predivide_factor(comm, op, factor):
    net = model(0)
    opt = distributed(comm, net, torch.optim.SGD(net.parameters(), lr=0.1), op=op, gradient_predivide_factor=factor)
    opt.zero_grad()
    loss_of(net, mine(global_batch(0, comm.size), comm.rank)).backward()
    grads = [p.grad.detach().clone() for p in net.parameters()]
    opt.remove_hooks()
    ref = model(0)
    per_rank = []
    for r in range(comm.size):
        ref.zero_grad()
        loss_of(ref, mine(global_batch(0, comm.size), r)).backward()
        per_rank.append([p.grad.detach().clone() for p in ref.parameters()])
    for i, g in enumerate(grads):
        want = sum(pr[i] for pr in per_rank) / (1 if op == "sum" else comm.size)
        assert_all(comm.mpi, bool(torch.allclose(g, want, rtol=1e-5, atol=1e-6)), f"grad {i} ({op}, {factor})")


def test_bad_arguments_are_refused_on_every_rank(comm):
    net = model(0)
    with pytest.raises(mpicoll.ArgumentError, match="op="):
        mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), net.named_parameters(), op="max",
                                comm=comm)
    named = list(net.named_parameters())
    if comm.rank == comm.size - 1:
        named = named[:-1]  # one rank forgets a parameter: the optimizer has it unnamed there
    with pytest.raises((mpicoll.ArgumentError, mpicoll.PeerError)):
        mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), named, comm=comm)
    other = list(net.named_parameters())
    if comm.rank == comm.size - 1 and comm.size > 1:
        other = [(f"x{n}", p) for n, p in other]
    if comm.size > 1:
        with pytest.raises(mpicoll.MismatchError):
            mt.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), other, comm=comm)
