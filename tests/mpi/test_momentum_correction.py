"""DistributedOptimizer's momentum correction under real MPI, step by step against a single-process
reference of the same algorithm (p simulated ranks, each with its own momentum and residual).

Gradients are small integers (different on every rank), put in ``.grad`` by ``backward()`` of
``sum(p * g)``. The compressed paths used here decode and add the payloads in rank order, as the
reference does, and with momentum 0.5 and no weight decay the dense warm-up's velocities are
dyadic, so their sums are exact in any order: the comparisons are bitwise, at every step.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from mpitools import assert_all, assert_equal_all, assert_same_on_all_ranks

torch = pytest.importorskip("torch")
from torchtools import grads, initial  # noqa: E402

import mpicoll  # noqa: E402
import mpicoll.torch as mt  # noqa: E402
from mpicoll import compression  # noqa: E402
from mpicoll.compression import ErrorFeedback  # noqa: E402

EF = {"sign": lambda: ErrorFeedback(compression.get("sign")),
      "topk": lambda: ErrorFeedback(compression.get("topk", ratio=0.3))}
PATH = {"sign": "allgather_decode", "topk": "sparse_allgather"}


def groups_of(params, hyper, plain_last):
    """One group of ``hyper`` (momentum SGD), and with ``plain_last`` the last tensor in a group
    without momentum (never corrected: its gradient goes through the compressor as it is)."""
    if not plain_last:
        return [dict(params=params, **hyper)]
    return [dict(params=params[:-1], **hyper), dict(params=params[-1:], lr=hyper["lr"], momentum=0.0,
                                                      weight_decay=0.25)]


def train(comm, steps, *, codec, hyper, warmup=0, schedule=None, plain_last=False, start=None, state=None,
          correction="auto", first=0, masking=True):
    """DistributedOptimizer(SGD) on the tensors of :func:`initial`; parameters after every step."""
    params = [torch.nn.Parameter(p.clone()) for p in (start if start is not None else initial())]
    sgd = torch.optim.SGD(groups_of(params, hyper, plain_last), lr=hyper["lr"], foreach=False)
    compressor = EF[codec]() if codec else None
    opt = mt.DistributedOptimizer(sgd, [(f"p{i}", p) for i, p in enumerate(params)], compressor=compressor,
                                  comm=comm, algorithm=PATH.get(codec, "auto"), warmup_steps=warmup,
                                  momentum_correction=correction, momentum_masking=masking)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule) if schedule else None
    if state is not None:
        opt.load_state_dict(state[0])
        if sched is not None:
            sched.load_state_dict(state[1])
    history = []
    for step in range(first, first + steps):
        opt.zero_grad()
        sum((p * g).sum() for p, g in zip(params, grads(step, comm.rank), strict=True)).backward()
        opt.step()
        if sched is not None:
            sched.step()
        history.append([p.detach().clone() for p in params])
    return history, opt, sched


def reference(size, steps, *, codec, hyper, warmup=0, schedule=None, plain_last=False, masking=True):
    """The same algorithm, every rank simulated: local momentum, velocity error feedback over one
    fused bucket (tensors in reverse order), momentum masking for top-k, then ``w -= lr * average``."""
    params = initial()
    m, wd, nesterov = hyper["momentum"], hyper.get("weight_decay", 0.0), hyper.get("nesterov", False)
    corrected = [not (plain_last and i == len(params) - 1) for i in range(len(params))]
    u = [[None] * len(params) for _ in range(size)]
    efs = [EF[codec]() for _ in range(size)]
    order = list(range(len(params)))[::-1]  # GradientBuckets fills buckets from the last tensor back
    counts = [params[i].numel() for i in order]
    history = []
    for step in range(steps):
        rate = hyper["lr"] * (schedule(step) if schedule else 1.0)
        flats = []
        for r in range(size):
            sends = {}
            for i, (p, g) in enumerate(zip(params, grads(step, r), strict=True)):
                if not corrected[i]:
                    sends[i] = g
                    continue
                d = g.add(p, alpha=wd) if wd else g.clone()
                u[r][i] = d.clone() if u[r][i] is None else u[r][i].mul_(m).add_(d)
                sends[i] = d.add(u[r][i], alpha=m) if nesterov else u[r][i].clone()
            flats.append(np.concatenate([sends[i].numpy().reshape(-1) for i in order]))
        total = np.zeros(sum(counts), dtype=np.float32)
        for r in range(size):
            if step < warmup:
                total += flats[r]
                continue
            payload, ctx = efs[r].compress(flats[r], key="bucket")
            total += efs[r].decompress(payload, ctx).reshape(-1)
            if masking and efs[r].kind == "sparse":  # momentum factor masking
                left = np.split(efs[r].residual("bucket"), np.cumsum(counts)[:-1])
                for i, part in zip(order, left, strict=True):
                    if corrected[i]:
                        u[r][i].view(-1)[torch.from_numpy(part == 0)] = 0
        total /= np.float32(size)
        for i, part in zip(order, np.split(total, np.cumsum(counts)[:-1]), strict=True):
            avg = torch.from_numpy(part.copy()).reshape(params[i].shape)
            if not corrected[i]:  # torch.optim.SGD without momentum: weight decay, then the step
                avg = avg.add(params[i], alpha=0.25)
            params[i].add_(avg, alpha=-rate)
        history.append([p.clone() for p in params])
    return history


def assert_history(comm, got, want, what):
    assert_all(comm.mpi, len(got) == len(want), f"{what}: {len(got)} steps, want {len(want)}")
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        for i, (a, b) in enumerate(zip(g, w, strict=True)):
            assert_same_on_all_ranks(comm.mpi, a.numpy(), f"{what}: step {step + 1}, tensor {i}")
            assert_equal_all(comm.mpi, a.numpy(), b.numpy(), f"{what}: step {step + 1}, tensor {i}")


HALF = lambda s: 1.0 / (1 + s)  # noqa: E731


def test_sign_nesterov_weight_decay_scheduler_and_a_plain_group(comm):
    hyper = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    got, opt, _ = train(comm, 6, codec="sign", hyper=hyper, schedule=HALF, plain_last=True)
    assert_all(comm.mpi, opt.momentum_correction, "auto did not correct EF(sign) under momentum SGD")
    want = reference(comm.size, 6, codec="sign", hyper=hyper, schedule=HALF, plain_last=True)
    assert_history(comm, got, want, "EF(sign), momentum-corrected")
    group = opt.param_groups[0]
    assert_all(comm.mpi, (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 0.01),
               f"the group's settings were not restored after step: {group}")


@pytest.mark.parametrize("masking", [True, False])
def test_topk_masking_and_dense_warmup_boundary(comm, masking):
    hyper = dict(lr=0.1, momentum=0.5)
    got, opt, _ = train(comm, 6, codec="topk", hyper=hyper, warmup=2, schedule=HALF, masking=masking)
    assert_all(comm.mpi, opt.momentum_correction, "auto did not correct EF(top-k) under momentum SGD")
    want = reference(comm.size, 6, codec="topk", hyper=hyper, warmup=2, schedule=HALF, masking=masking)
    assert_history(comm, got, want, f"EF(top-k), momentum-corrected, masking={masking}, dense warm-up 2")


def test_checkpoint_round_trip_mid_run(comm):
    hyper = dict(lr=0.1, momentum=0.5)
    args = dict(codec="sign", hyper=hyper, warmup=2, schedule=HALF)
    straight, _, _ = train(comm, 7, **args)
    first, opt, sched = train(comm, 3, **args)
    saved = (copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict()))
    assert_all(comm.mpi, saved[0]["state"][0]["momentum_buffer"] is not None and saved[0]["mpicoll"]["residuals"],
               "the momenta and residuals are not in the state_dict")
    resumed, _, _ = train(comm, 4, **args, start=first[-1], state=saved, first=3)
    assert_history(comm, first + resumed, straight, "resumed mid-run")


def test_checkpoint_refused_at_another_world_size_or_without_correction(comm):
    _, opt, _ = train(comm, 2, codec="sign", hyper=dict(lr=0.1, momentum=0.9))
    state = opt.state_dict()
    before = [p.detach().clone() for p in opt.param_groups[0]["params"]]
    moved = copy.deepcopy(state)
    moved["mpicoll_optimizer"]["world_size"] = comm.size + 1
    with pytest.raises(mpicoll.ArgumentError, match="ranks"):
        opt.load_state_dict(moved)
    _, plain, _ = train(comm, 0, codec="sign", hyper=dict(lr=0.1, momentum=0.9), correction=False)
    with pytest.raises(mpicoll.ArgumentError, match="per-rank momenta"):
        plain.load_state_dict(state)
    assert_all(comm.mpi, all(torch.equal(a, b) for a, b in zip(before, opt.param_groups[0]["params"], strict=True)),
               "a refused load changed the parameters")


def test_auto_is_off_without_error_feedback_and_for_powersgd(comm):
    params = [torch.nn.Parameter(p.clone()) for p in initial()]
    named = [(f"p{i}", p) for i, p in enumerate(params)]
    cases = {"none": None, "fp16": compression.get("fp16"), "bare sign": compression.get("sign"),
             "powersgd": ErrorFeedback(compression.get("powersgd", rank=1))}
    for what, compressor in cases.items():
        opt = mt.DistributedOptimizer(torch.optim.SGD(params, lr=0.1, momentum=0.9), named, compressor=compressor,
                                      comm=comm)
        assert_all(comm.mpi, not opt.momentum_correction, f"auto corrected {what}")
        opt.remove_hooks()
    adam = mt.DistributedOptimizer(torch.optim.Adam(params), named, compressor=EF["sign"](), comm=comm)
    assert_all(comm.mpi, not adam.momentum_correction, "auto corrected Adam")
    adam.remove_hooks()
    with pytest.raises(mpicoll.ArgumentError, match="SGD"):
        mt.DistributedOptimizer(torch.optim.Adam(params), named, compressor=EF["sign"](), comm=comm,
                                momentum_correction=True)
    with pytest.raises(mpicoll.ArgumentError, match="momentum_correction"):
        mt.DistributedOptimizer(torch.optim.SGD(params, lr=0.1), named, comm=comm, momentum_correction="yes")


def test_dense_codec_trains_as_before(comm):
    """fp16 (no error feedback): auto leaves the wrapped SGD's momentum on averaged gradients alone,
    so the momentum buffer is the same on every rank (a corrected one would be this rank's own)."""
    got, opt, _ = train(comm, 3, codec=None, hyper=dict(lr=0.1, momentum=0.9))
    forced, forced_opt, _ = train(comm, 3, codec=None, hyper=dict(lr=0.1, momentum=0.9), correction=True)
    assert_all(comm.mpi, not opt.momentum_correction and forced_opt.momentum_correction, "correction flags")
    buffer = opt.state[opt.param_groups[0]["params"][0]]["momentum_buffer"].numpy()
    assert_same_on_all_ranks(comm.mpi, buffer, "uncorrected momentum buffer")
    for i, (a, b) in enumerate(zip(got[-1], forced[-1], strict=True)):  # linear: equal up to rounding
        assert_same_on_all_ranks(comm.mpi, b.numpy(), f"forced correction, tensor {i}")
        assert_all(comm.mpi, torch.allclose(a, b, rtol=1e-5, atol=1e-6), f"tensor {i}: correction without "
                   f"compression is not momentum SGD on averaged gradients")


def test_closure_and_add_param_group(comm):
    params = [torch.nn.Parameter(p.clone()) for p in initial()]
    extra = torch.nn.Parameter(torch.ones(4))
    opt = mt.DistributedOptimizer(torch.optim.SGD(params, lr=0.1, momentum=0.9),
                                  [(f"p{i}", p) for i, p in enumerate(params)], compressor=EF["sign"](), comm=comm)

    def closure():
        opt.zero_grad()
        loss = sum((p * g).sum() for p, g in zip(params, grads(0, comm.rank), strict=True))
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert_all(comm.mpi, loss is not None and opt.param_groups[0]["momentum"] == 0.9, "step(closure)")
    opt.add_param_group({"params": [extra], "lr": 0.1, "momentum": 0.9})
    opt.zero_grad()
    (sum((p * g).sum() for p, g in zip(params, grads(1, comm.rank), strict=True)) + extra.sum() * comm.rank).backward()
    opt.step()
    for i, p in enumerate([*params, extra]):
        assert_same_on_all_ranks(comm.mpi, p.detach().numpy(), f"tensor {i} after add_param_group")
    assert_all(comm.mpi, "momentum_buffer" in opt.state[extra], "the new group was not corrected")
    opt.remove_hooks()


def test_accumulation_and_predivide_equal_momentum_sgd(comm):
    """Forced correction without compression, two backward passes per step and a predivide factor:
    momentum SGD (Nesterov, weight decay) on the averaged gradients, up to rounding."""
    size, hyper = comm.size, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    params = [torch.nn.Parameter(p.clone()) for p in initial()]
    opt = mt.DistributedOptimizer(torch.optim.SGD(params, **hyper), [(f"p{i}", p) for i, p in enumerate(params)],
                                  comm=comm, backward_passes_per_step=2, gradient_predivide_factor=2.0,
                                  momentum_correction=True)
    ref = [torch.nn.Parameter(p.clone()) for p in initial()]
    sgd = torch.optim.SGD(ref, **hyper, foreach=False)
    for step in range(4):
        opt.zero_grad()
        for micro in range(2):
            sum((p * g).sum() for p, g in zip(params, grads(10 * step + micro, comm.rank), strict=True)).backward()
        opt.step()
        for i, p in enumerate(ref):
            p.grad = sum(grads(10 * step + micro, r)[i] for r in range(size) for micro in range(2)) / size
        sgd.step()
    for i, (a, b) in enumerate(zip(params, ref, strict=True)):
        assert_same_on_all_ranks(comm.mpi, a.detach().numpy(), f"tensor {i}")
        assert_all(comm.mpi, torch.allclose(a.detach(), b.detach(), rtol=1e-5, atol=1e-6), f"tensor {i} differs")
    opt.remove_hooks()
