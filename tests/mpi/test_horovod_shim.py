"""The Horovod shim (``import mpicoll.horovod.torch as hvd``) against plain MPI and mpicoll results."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from mpi4py import MPI
from mpitools import assert_all, assert_equal_all

torch = pytest.importorskip("torch")
from torchtools import assert_identical_and_close, global_batch, loss_of, mine, model, reference  # noqa: E402

import mpicoll  # noqa: E402
import mpicoll.horovod.torch as hvd  # noqa: E402


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    hvd.init()
    yield MPI.COMM_WORLD
    hvd.shutdown()


def test_ranks_and_hosts(world):
    assert (hvd.rank(), hvd.size()) == (world.Get_rank(), world.Get_size())
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        assert (hvd.local_rank(), hvd.local_size()) == (local.Get_rank(), local.Get_size())
    finally:
        local.Free()
    pairs = world.allgather((hvd.local_rank(), hvd.cross_rank()))
    assert len(set(pairs)) == world.Get_size()  # (local, cross) names every rank once
    assert hvd.cross_size() == sum(1 for lr, _ in pairs if lr == hvd.local_rank())
    assert hvd.is_initialized() and hvd.mpi_enabled() and not hvd.gloo_enabled()


def mpi_reduce(world, x: np.ndarray, op) -> np.ndarray:
    out = np.empty_like(x)
    world.Allreduce(x, out, op)
    return out


@pytest.mark.parametrize(("op", "mpi_op"), [(None, MPI.SUM), ("sum", MPI.SUM), ("min", MPI.MIN),
                                            ("max", MPI.MAX), ("prod", MPI.PROD)])
def test_allreduce_equals_mpi(world, op, mpi_op):
    r = world.Get_rank()
    x = torch.arange(12, dtype=torch.float64).reshape(3, 4) % 5 - 2 + r
    hvd_op = {None: None, "sum": hvd.Sum, "min": hvd.Min, "max": hvd.Max, "prod": hvd.Product}[op]
    got = hvd.allreduce(x, op=hvd_op)
    want = mpi_reduce(world, x.numpy(), mpi_op)
    if op is None:  # Horovod's default is the average
        want = want / world.Get_size()
    assert_equal_all(world, got.numpy(), want, f"allreduce {op}")
    assert_equal_all(world, x.numpy(), (torch.arange(12, dtype=torch.float64).reshape(3, 4) % 5 - 2 + r).numpy(),
                     "input untouched")


def test_allreduce_variants(world):
    r, p = world.Get_rank(), world.Get_size()
    x = torch.full((5,), float(r + 1))
    total = p * (p + 1) / 2
    assert_equal_all(world, hvd.allreduce(x, average=False).numpy(), np.full(5, total, np.float32), "average=False")
    scaled = hvd.allreduce(x, op=hvd.Sum, prescale_factor=2.0, postscale_factor=0.25)
    assert_equal_all(world, scaled.numpy(), np.full(5, total / 2, np.float32), "pre/post scale")
    half = hvd.allreduce(x, compression=hvd.Compression.fp16)
    assert_all(world, half.dtype == torch.float32 and bool(torch.allclose(half, torch.full((5,), total / p))),
               "fp16 compression")
    y = x.clone()
    assert hvd.allreduce_(y, op=hvd.Sum) is y
    assert_equal_all(world, y.numpy(), np.full(5, total, np.float32), "in place")
    handle = hvd.allreduce_async(x, op=hvd.Max)
    result = hvd.synchronize(handle)
    assert hvd.poll(handle)
    assert_equal_all(world, result.numpy(), np.full(5, p, np.float32), "async max")
    with pytest.raises(mpicoll.UnsupportedError, match="Adasum"):
        hvd.allreduce(x, op=hvd.Adasum)
    with pytest.raises(mpicoll.ArgumentError):
        hvd.allreduce(x, average=True, op=hvd.Sum)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bfloat16])
def test_allgather_with_different_first_dimensions(world, dtype):
    r = world.Get_rank()
    x = (torch.arange((r + 1) * 3).reshape(r + 1, 3) + 100 * r).to(dtype)
    got = hvd.allgather(x)
    want = torch.cat([(torch.arange((q + 1) * 3).reshape(q + 1, 3) + 100 * q).to(dtype)
                      for q in range(world.Get_size())])
    assert_all(world, got.dtype == dtype and torch.equal(got, want), f"allgather {dtype}")
    assert_equal_all(world, hvd.allgather(torch.tensor(float(r))).numpy(),
                     np.arange(world.Get_size(), dtype=np.float32), "scalars")
    bad = torch.zeros(2, 3 if r == 0 else 4)
    if world.Get_size() > 1:
        with pytest.raises(mpicoll.MismatchError):
            hvd.allgather(bad)


def test_broadcast_in_place_and_async(world):
    r, root = world.Get_rank(), world.Get_size() - 1
    x = torch.full((2, 3), float(r))
    got = hvd.broadcast(x, root)
    assert_equal_all(world, got.numpy(), np.full((2, 3), root, np.float32), "broadcast")
    assert_equal_all(world, x.numpy(), np.full((2, 3), r, np.float32), "input untouched")
    hvd.broadcast_(x, 0)
    assert_equal_all(world, x.numpy(), np.zeros((2, 3), np.float32), "broadcast_")
    y = torch.full((4,), float(r), dtype=torch.bfloat16)
    assert_equal_all(world, hvd.synchronize(hvd.broadcast_async(y, root)).float().numpy(),
                     np.full(4, root, np.float32), "bfloat16 async")


def test_objects(world):
    r = world.Get_rank()
    assert hvd.broadcast_object({"rank": r, "x": [r]}, root_rank=world.Get_size() - 1) == \
        {"rank": world.Get_size() - 1, "x": [world.Get_size() - 1]}
    assert hvd.allgather_object(("r", r)) == [("r", q) for q in range(world.Get_size())]
    assert hvd.broadcast_object("x") == "x"


def test_broadcast_parameters_and_optimizer_state(world):
    r = world.Get_rank()
    net = model(seed=r)
    opt = torch.optim.SGD(net.parameters(), lr=0.1 * (r + 1), momentum=0.9)
    hvd.broadcast_parameters(net.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    for i, p in enumerate(net.parameters()):
        assert_equal_all(world, p.detach().numpy(), model(seed=0)[0 if i < 2 else 2].state_dict()[
            "weight" if i % 2 == 0 else "bias"].numpy(), f"param {i}")
    assert_equal_all(world, np.float64(opt.param_groups[0]["lr"]), np.float64(0.1), "learning rate")


@pytest.mark.parametrize(("kwargs", "passes"), [({}, 1), ({"backward_passes_per_step": 2}, 2),
                                                ({"op": "sum"}, 1), ({"gradient_predivide_factor": 2.0}, 1),
                                                ({"compression": "fp16"}, 1)])
def test_distributed_optimizer_trains_like_one_process(world, kwargs, passes):
    kwargs = dict(kwargs)
    if kwargs.get("op") == "sum":
        kwargs["op"] = hvd.Sum
    if kwargs.get("compression") == "fp16":
        kwargs["compression"] = hvd.Compression.fp16
    net = model(seed=0)
    lr = 0.1 / world.Get_size() if kwargs.get("op") == hvd.Sum else 0.1  # a sum is size times the mean
    opt = hvd.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9),
                                   named_parameters=net.named_parameters(), **kwargs)
    assert isinstance(opt, torch.optim.Optimizer)
    steps = 3
    for step in range(steps):
        opt.zero_grad()
        for micro in range(passes):
            (loss_of(net, mine(global_batch(passes * step + micro, world.Get_size()), world.Get_rank()))
             / passes).backward()
        opt.step()
    opt.remove_hooks()
    tol = 5e-3 if "compression" in kwargs else 1e-5
    if passes == 1:
        want = reference(steps, world.Get_size())
        assert_identical_and_close(SimpleNamespace(mpi=world), net.parameters(), want, rtol=tol, atol=tol)
    else:
        for i, p in enumerate(net.parameters()):
            assert_equal_all(world, p.detach().numpy(), world.bcast(p.detach().numpy(), root=0), f"param {i}")


def test_distributed_optimizer_refusals(world):
    net = model(seed=0)
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(mpicoll.UnsupportedError, match="Adasum"):
        hvd.DistributedOptimizer(sgd, net.named_parameters(), op=hvd.Adasum)
    with pytest.raises(mpicoll.UnsupportedError):
        hvd.DistributedOptimizer(sgd, net.named_parameters(), process_set=object())


def test_join_with_uneven_batches(world):
    r, p = world.Get_rank(), world.Get_size()
    net = model(seed=0)
    opt = hvd.DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
                                   named_parameters=net.named_parameters())
    counts = [4 - (1 if q == 0 and p > 1 else 0) for q in range(p)]
    for step in range(counts[r]):
        opt.zero_grad()
        loss_of(net, mine(global_batch(step, p), r)).backward()
        opt.step()
    last = hvd.join()
    opt.remove_hooks()
    assert_all(world, last == (1 if p > 1 else 0), f"join returned {last}")
    want = reference(4, p, active=lambda step: [q for q in range(p) if step < counts[q]])
    assert_identical_and_close(SimpleNamespace(mpi=world), net.parameters(), want)
