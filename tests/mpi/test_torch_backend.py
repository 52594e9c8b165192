"""The "mpicoll" torch.distributed backend against gloo, in the same job, on any rank count.

The default group is ``init_process_group("mpicoll")`` with no address, rank or size (they come
from MPI); gloo runs beside it in a second group (``new_group(backend="gloo")``) on the TCP store
the mpi:// rendezvous serves from rank 0. Inputs are small integers, so every summation order
gives the same bits and results must be equal exactly.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from mpitools import WORLD, assert_all, assert_equal_all, rank_input

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

import mpicoll  # noqa: E402
import mpicoll.torch  # noqa: E402  (registers the backend)

R = dist.ReduceOp
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
INTS = [torch.int32, torch.int64, torch.int8, torch.uint8]


@pytest.fixture(scope="module")
def groups():
    torch.set_num_threads(1)
    saved = {k: os.environ.pop(k) for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE") if k in os.environ}
    dist.init_process_group("mpicoll")  # nothing else: rank, size and store come from MPI
    gloo = dist.new_group(backend="gloo")
    yield dist.group.WORLD, gloo
    dist.destroy_process_group()
    os.environ.update(saved)


def data(count: int, dtype: torch.dtype, rank: int | None = None, kind: str = "int", seed: int = 0) -> torch.Tensor:
    values = rank_input(count, WORLD.Get_rank() if rank is None else rank, "int64", kind, seed)
    if dtype == torch.uint8 or dtype == torch.bool:
        values = np.abs(values)
    return torch.from_numpy(values).to(dtype)


def same(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Collective: equal dtype, shape and bits on every rank."""
    ok = got.dtype == want.dtype and got.shape == want.shape and bool(torch.equal(got, want))
    assert_all(WORLD, ok, f"{what}: got {got.flatten()[:6].tolist()} want {want.flatten()[:6].tolist()}")


def both(groups, fn):
    """``fn(group)`` on the mpicoll group and on gloo; their results."""
    return fn(groups[0]), fn(groups[1])


def test_the_default_group_comes_from_mpi(groups):
    world, _ = groups
    assert_all(WORLD, dist.get_backend(world) == "mpicoll" and dist.get_rank() == WORLD.Get_rank()
               and dist.get_world_size() == WORLD.Get_size(), "backend, rank and size from MPI")
    assert_all(WORLD, isinstance(world, mpicoll.torch.ProcessGroup) and world.name() == "mpicoll")


@pytest.mark.parametrize("async_op", [False, True])
def test_all_reduce_every_op_and_dtype_equals_gloo(groups, async_op):
    for dtype in FLOATS + INTS + [torch.bool]:
        for op in ("SUM", "PRODUCT", "MIN", "MAX", "AVG", "BAND", "BOR", "BXOR"):
            integral = not dtype.is_floating_point
            if (op == "AVG" and integral) or (op.startswith("B") and not integral):
                continue  # refused by both (tested below)
            if dtype == torch.bool and op in ("PRODUCT", "AVG"):
                continue
            x = data(37, dtype, kind="prod" if op == "PRODUCT" else "int")

            def run(group, x=x, op=op):
                t = x.clone()
                work = dist.all_reduce(t, op=getattr(R, op), group=group, async_op=async_op)
                if async_op:
                    assert work.get_future().wait()[0] is not None
                    work.wait()
                return t

            ours, gloo = both(groups, run)
            if op == "AVG" and dtype in (torch.float16, torch.bfloat16):
                # gloo divides in the narrow dtype; mpicoll in float32, rounding once at the end
                total = sum(data(37, torch.float64, r) for r in range(WORLD.Get_size()))
                gloo = (total / WORLD.Get_size()).to(torch.float32).to(dtype)
            same(ours, gloo, f"{dtype} {op}")


def test_unsupported_reductions_raise_clearly(groups):
    world, _ = groups
    with pytest.raises(mpicoll.DtypeError, match="avg"):
        dist.all_reduce(torch.ones(3, dtype=torch.int64), op=R.AVG, group=world)
    with pytest.raises(mpicoll.DtypeError, match="integer bits"):
        dist.all_reduce(torch.ones(3), op=R.BXOR, group=world)
    with pytest.raises(mpicoll.DtypeError, match="cast them to int64"):
        dist.all_reduce(torch.ones(3, dtype=torch.uint32), group=world)
    with pytest.raises(mpicoll.UnsupportedError, match="PREMUL_SUM"):
        dist.all_reduce(torch.ones(3), op=dist._make_nccl_premul_sum(2.0), group=world)
    dist.barrier(group=world)  # still in step


def test_bfloat16_is_carried_in_float32(groups):
    world, _ = groups
    x = torch.full((5,), 1.0 + 2 ** -7, dtype=torch.bfloat16)  # exact in bfloat16
    dist.all_reduce(x, group=world)
    want = torch.full((5,), (1.0 + 2 ** -7) * WORLD.Get_size()).to(torch.bfloat16)  # rounded once
    same(x, want, "bfloat16 sum")


def test_broadcast_reduce_from_every_root(groups):
    size = WORLD.Get_size()
    for root in range(size):
        for dtype in (torch.float32, torch.bfloat16, torch.int8, torch.bool, torch.complex64):
            x = data(11, torch.int64).to(dtype)
            got = both(groups, lambda g, x=x, root=root: _broadcast(x.clone(), root, g))
            same(*got, f"broadcast root {root} {dtype}")
        for op in ("SUM", "MAX"):
            x = data(13, torch.float32)
            ours, gloo = both(groups, lambda g, x=x, op=op, root=root: _reduce(x.clone(), root, op, g))
            if WORLD.Get_rank() == root:
                same(ours, gloo, f"reduce root {root} {op}")
            else:
                same(ours, x, "reduce leaves non-roots alone")


def _broadcast(t, root, group):
    dist.broadcast(t, src=root, group=group)
    return t


def _reduce(t, root, op, group):
    dist.reduce(t, dst=root, op=getattr(R, op), group=group)
    return t


@pytest.mark.parametrize("async_op", [False, True])
def test_all_gather_and_reduce_scatter_equal_gloo(groups, async_op):
    size = WORLD.Get_size()
    for dtype in (torch.float32, torch.int64, torch.bfloat16, torch.bool):
        x = data(7, dtype)

        def gather_list(group, x=x):
            outs = [torch.empty_like(x) for _ in range(size)]
            _wait(dist.all_gather(outs, x, group=group, async_op=async_op))
            return torch.stack(outs)

        same(*both(groups, gather_list), f"all_gather {dtype}")

        def gather_into(group, x=x):
            out = torch.empty(size * 7, dtype=x.dtype)
            _wait(dist.all_gather_into_tensor(out, x, group=group, async_op=async_op))
            return out

        same(*both(groups, gather_into), f"all_gather_into_tensor {dtype}")
    for op in ("SUM", "MIN", "AVG"):
        x = data(5 * size, torch.float32)

        def scatter_tensor(group, x=x, op=op):
            out = torch.empty(5)
            _wait(dist.reduce_scatter_tensor(out, x, op=getattr(R, op), group=group, async_op=async_op))
            return out

        same(*both(groups, scatter_tensor), f"reduce_scatter_tensor {op}")

        def scatter_list(group, x=x, op=op):
            out = torch.empty(5)
            _wait(dist.reduce_scatter(out, list(x.chunk(size)), op=getattr(R, op), group=group, async_op=async_op))
            return out

        same(*both(groups, scatter_list), f"reduce_scatter {op}")


def _wait(work):
    if work is not None:
        work.wait()


def test_in_place_all_gather_and_uneven_all_gather(groups):
    world, _ = groups
    size, rank = WORLD.Get_size(), WORLD.Get_rank()
    out = torch.zeros(size * 4)
    mine = out[rank * 4: (rank + 1) * 4]
    mine.copy_(data(4, torch.float32))
    dist.all_gather_into_tensor(out, mine, group=world)  # FSDP's in-place form
    want = torch.cat([data(4, torch.float32, r) for r in range(size)])
    same(out, want, "in-place all_gather_into_tensor")
    outs = [torch.empty(r + 1, dtype=torch.int64) for r in range(size)]
    dist.all_gather(outs, data(rank + 1, torch.int64), group=world)
    same(torch.cat(outs), torch.cat([data(r + 1, torch.int64, r) for r in range(size)]), "uneven all_gather")


def test_gather_scatter_from_every_root(groups):
    size, rank = WORLD.Get_size(), WORLD.Get_rank()
    for root in range(size):
        x = data(6, torch.float64)

        def gather(group, x=x, root=root):
            outs = [torch.empty_like(x) for _ in range(size)] if rank == root else None
            dist.gather(x, outs, dst=root, group=group)
            return torch.stack(outs) if rank == root else x

        same(*both(groups, gather), f"gather root {root}")

        def scatter(group, root=root):
            inputs = [data(3, torch.int32, r, seed=root) for r in range(size)] if rank == root else None
            out = torch.empty(3, dtype=torch.int32)
            dist.scatter(out, inputs, src=root, group=group)
            return out

        same(*both(groups, scatter), f"scatter root {root}")


@pytest.mark.parametrize("async_op", [False, True])
def test_all_to_all_equals_gloo(groups, async_op):
    size, rank = WORLD.Get_size(), WORLD.Get_rank()
    x = data(3 * size * 2, torch.float32).view(3 * size, 2)

    def even(group):
        out = torch.empty_like(x)
        _wait(dist.all_to_all_single(out, x, group=group, async_op=async_op))
        return out

    same(*both(groups, even), "all_to_all_single")
    send = [(rank + j) % 3 for j in range(size)]  # rows for rank j
    recv = [(j + rank) % 3 for j in range(size)]  # what rank j sends here
    y = data(sum(send) * 2, torch.int64).view(sum(send), 2)

    def split(group):
        out = torch.empty(sum(recv), 2, dtype=torch.int64)
        _wait(dist.all_to_all_single(out, y, recv, send, group=group, async_op=async_op))
        return out

    same(*both(groups, split), "all_to_all_single with split sizes")

    def lists(group, uneven=False):
        inputs = [data(j + 1 if uneven else 2, torch.float32, seed=j) for j in range(size)]
        outs = [torch.empty(rank + 1 if uneven else 2) for _ in range(size)]
        _wait(dist.all_to_all(outs, inputs, group=group, async_op=async_op))
        return torch.cat(outs)

    same(*both(groups, lists), "all_to_all")
    want = torch.cat([data(rank + 1, torch.float32, j, seed=rank) for j in range(size)])
    same(lists(groups[0], uneven=True), want, "all_to_all of different sizes (gloo refuses them)")


def test_async_handles_waited_in_any_order(groups):
    world, _ = groups
    tensors = [data(100 + i, torch.float32, seed=i) for i in range(6)]
    works = [dist.all_reduce(t, group=world, async_op=True) for t in tensors]
    futures = [w.get_future() for w in works]
    for w in reversed(works):
        w.wait()
    for i, (t, f) in enumerate(zip(tensors, futures, strict=True)):
        want = sum(data(100 + i, torch.float32, r, seed=i) for r in range(WORLD.Get_size()))
        same(t, want, f"async all_reduce {i}")
        assert_all(WORLD, f.done() and f.value()[0] is t, "the future holds the output tensor")


def test_barrier_and_objects(groups):
    world, _ = groups
    dist.barrier(group=world)
    objects = [None] * WORLD.Get_size()
    dist.all_gather_object(objects, {"rank": WORLD.Get_rank()}, group=world)
    assert_all(WORLD, objects == [{"rank": r} for r in range(WORLD.Get_size())], "all_gather_object")
    box = [WORLD.Get_rank() * 10] if WORLD.Get_rank() == 0 else [None]
    dist.broadcast_object_list(box, src=0, group=world)
    assert_all(WORLD, box == [0], "broadcast_object_list")


def test_send_recv_ring_and_any_source(groups):
    world, _ = groups
    size, rank = WORLD.Get_size(), WORLD.Get_rank()
    right, left = (rank + 1) % size, (rank - 1) % size
    out = torch.empty(4, dtype=torch.bfloat16)
    recv = dist.irecv(out, src=left, group=world, tag=5)
    send = dist.isend(data(4, torch.bfloat16), dst=right, group=world, tag=5)
    send.wait()
    recv.wait()
    same(out, data(4, torch.bfloat16, left), "isend/irecv ring")
    late = torch.empty(3)
    future = dist.irecv(late, src=left, group=world, tag=6).get_future()  # completed by a background waiter
    dist.isend(data(3, torch.float32), dst=right, group=world, tag=6).wait()
    future.wait()
    same(late, data(3, torch.float32, left), "irecv's future")
    if size > 1:
        if rank == 0:
            got = torch.empty(size - 1, 3)
            sources = set()
            for i in range(size - 1):
                buf = torch.empty(3)
                sources.add(dist.recv(buf, group=world, tag=9))
                got[i] = buf
            ok = sources == set(range(1, size)) and sorted(got[:, 0].tolist()) == list(range(1, size))
        else:
            dist.send(torch.full((3,), float(rank)), dst=0, group=world, tag=9)
            ok = True
        assert_all(WORLD, ok, "recv from any source names the senders")
    ops = [dist.P2POp(dist.isend, data(2, torch.int64), right, world),
           dist.P2POp(dist.irecv, out := torch.empty(2, dtype=torch.int64), left, world)]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    same(out, data(2, torch.int64, left), "batch_isend_irecv")


def test_subgroups_are_mpi_subcommunicators(groups):
    size, rank = WORLD.Get_size(), WORLD.Get_rank()
    evens = list(range(0, size, 2))
    ours = dist.new_group(evens, backend="mpicoll")
    gloo = dist.new_group(evens, backend="gloo")
    problems = []  # members only run the subgroup's collectives; the verdict is the world's
    if rank in evens:
        x = data(9, torch.float32)
        ours_sum, gloo_sum = _allreduce(x.clone(), ours), _allreduce(x.clone(), gloo)
        outs = [torch.empty(9) for _ in evens]
        dist.all_gather(outs, x, group=ours)
        b = x.clone()
        dist.broadcast(b, src=evens[-1], group=ours)  # a global rank, as torch takes it
        checks = {"all_reduce": torch.equal(ours_sum, gloo_sum),
                  "all_gather": torch.equal(torch.stack(outs), torch.stack([data(9, torch.float32, r) for r in evens])),
                  "broadcast": torch.equal(b, data(9, torch.float32, evens[-1]))}
        problems = [name for name, ok in checks.items() if not ok]
    assert_all(WORLD, not problems, f"subgroup {problems} differ")
    subgroup, all_subgroups = dist.new_subgroups(group_size=1 if size % 2 else 2, backend="mpicoll")
    x = data(4, torch.int64)
    dist.all_reduce(x, group=subgroup)
    members = dist.get_process_group_ranks(subgroup)
    same(x, sum(data(4, torch.int64, r) for r in members), "new_subgroups all_reduce")
    assert_all(WORLD, len(all_subgroups) == size // len(members), "one group per block")
    for g in (ours, gloo, *all_subgroups):
        if g is not dist.GroupMember.NON_GROUP_MEMBER:
            dist.destroy_process_group(g)
    dist.barrier()


def _allreduce(t, group):
    dist.all_reduce(t, group=group)
    return t


def test_a_mismatch_raises_on_every_rank_instead_of_hanging(groups):
    world, _ = groups
    rank = WORLD.Get_rank()
    if WORLD.Get_size() > 1:
        with pytest.raises(mpicoll.MismatchError):
            dist.all_reduce(torch.ones(3 + (rank == 0)), group=world)
        # a local check failing on one rank only: the others hear about it
        outs = [torch.empty(2) for _ in range(WORLD.Get_size() + (rank == 0))]
        with pytest.raises(mpicoll.ArgumentError if rank == 0 else mpicoll.PeerError):
            dist.all_gather(outs, torch.ones(2), group=world)
    x = data(3, torch.float32)
    dist.all_reduce(x, group=world)
    same(x, sum(data(3, torch.float32, r) for r in range(WORLD.Get_size())), "in step afterwards")
    assert_equal_all(WORLD, np.zeros(1), np.zeros(1))


def test_ddp_with_join_and_uneven_inputs_finishes_like_gloo(groups):
    """Rank 0 runs out of batches first; torch's Join shadows its peers' collectives until all are
    done: every rank finishes, with the parameters DDP on gloo gets from the same batches."""
    from torch.distributed.algorithms import Join

    rank = WORLD.Get_rank()

    def train(group):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        ddp = torch.nn.parallel.DistributedDataParallel(net, process_group=group, bucket_cap_mb=0.0001)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(rank)
        batches = [(torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g))
                   for _ in range(2 if rank == 0 else 4)]
        with Join([ddp]):
            for x, y in batches:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(ddp(x), y).backward()
                opt.step()
        return torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    ours, gloo = both(groups, train)
    assert_all(WORLD, bool(torch.allclose(ours, gloo, rtol=1e-5, atol=1e-6)),
               f"differs from gloo by {float((ours - gloo).abs().max()):.3g}")
    copies = WORLD.allgather(ours.numpy())
    assert_all(WORLD, all(np.array_equal(c, copies[0]) for c in copies), "the same on every rank")


class _HoldBackward(torch.autograd.Function):
    """Identity whose backward holds up the rest of backward until ``until()`` is true (60 s at most)."""

    @staticmethod
    def forward(ctx, x, until, seen):
        ctx.until, ctx.seen = until, seen
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        deadline = time.monotonic() + 60
        while not ctx.until() and time.monotonic() < deadline:
            time.sleep(0.001)  # no wait() on anything: only the engine can finish the all-reduce
        ctx.seen.append(ctx.until())
        return grad, None, None


class _Held(torch.nn.Module):
    """Two layers; the first one's backward waits for ``until()`` (see :class:`_HoldBackward`)."""

    def __init__(self, until, seen) -> None:
        super().__init__()
        self.first, self.last = torch.nn.Linear(8, 32), torch.nn.Linear(32, 200)  # last: 26 KB, a bucket
        self.until, self.seen = until, seen

    def forward(self, x):
        return self.last(torch.relu(_HoldBackward.apply(self.first(x), self.until, self.seen)))


def _arrives(request, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while not request.Test():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_ddp_first_bucket_is_all_reduced_while_backward_still_runs(groups):
    """DDP launches a bucket's all-reduce as soon as its gradients are ready; on this backend the
    launch returns at once and the progress engine runs it, so the last layer's bucket is
    all-reduced while the first layer's backward has not started, with nobody calling wait().

    The first layer's backward is held until that bucket's Work completes (60 s at most). Rank 1
    starts each backward only when rank 0's launch of that bucket has returned (60 s at most), so
    a launch that ran the collective on the caller's thread would be seen too."""
    world, _ = groups
    rank, size = WORLD.Get_rank(), WORLD.Get_size()
    torch.manual_seed(0)
    works, seen, step, signals, received = [], [], [0], [], []
    launch = world.allreduce  # DDP's C++ reducer calls the group's allreduce: record its Works

    def recording(tensors, opts=None):
        works.append(launch(tensors, opts))
        if rank == 0 and size > 1 and step[0] > 0 and len(works) == 1:
            signals.append(WORLD.issend(step[0], dest=1, tag=41))  # the launch has returned
        return works[-1]

    world.allreduce = recording
    try:
        # DDP's first step has a single bucket (built by size after it, then in order of readiness)
        net = _Held(lambda: step[0] == 0 or (len(works) == 1 and works[0].is_completed()), seen)
        ddp = torch.nn.parallel.DistributedDataParallel(net, process_group=world, bucket_cap_mb=0.01)
        g = torch.Generator().manual_seed(rank)
        counts = []
        for step[0] in range(4):
            works.clear()
            out = ddp(torch.randn(4, 8, generator=g))  # (the forward of step 1 rebuilds the buckets: collective)
            if rank == 1 and step[0] > 0:
                received.append(_arrives(WORLD.Irecv(np.empty(64, dtype=np.uint8), source=0, tag=41)))
            out.sum().backward()
            counts.append(len(works))
        for request in signals:
            request.Wait()
    finally:
        del world.allreduce
    assert_all(WORLD, counts == [1, 2, 2, 2], f"all-reduces per step: {counts}")
    assert_all(WORLD, seen == [True] * 4, f"the first bucket done while backward was held: {seen}")
    assert_all(WORLD, received == ([True] * 3 if rank == 1 else []), f"rank 0's launches returned: {received}")


def test_fsdp_fully_shard_on_cpu_equals_gloo(groups):
    """FSDP2 (``fully_shard``) on CPU: its all-gathers and reduce-scatters on the mpicoll backend
    give the parameters they give on gloo."""
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import fully_shard

    rank = WORLD.Get_rank()

    def train(group):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
        mesh = DeviceMesh.from_group(group, "cpu")
        for layer in (net[0], net[2], net):
            fully_shard(layer, mesh=mesh)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        g = torch.Generator().manual_seed(rank)
        for _ in range(3):
            x, y = torch.randn(4, 8, generator=g), torch.randint(0, 5, (4,), generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return torch.cat([p.full_tensor().detach().reshape(-1) for p in net.parameters()])

    ours, gloo = both(groups, train)
    assert_all(WORLD, bool(torch.allclose(ours, gloo, rtol=1e-5, atol=1e-6)),
               f"differs from gloo by {float((ours - gloo).abs().max()):.3g}")


def test_coalesced_collectives(groups):
    """torch's coalescing manager (FSDP and DDP internals) hands several calls over at once."""
    from torch.distributed.distributed_c10d import _coalescing_manager

    world, _ = groups
    size = WORLD.Get_size()
    tensors = [data(5 + i, torch.float32, seed=i) for i in range(3)] + [data(4, torch.int64, seed=9)]
    with _coalescing_manager(group=world, async_ops=True) as cm:
        for t in tensors:
            dist.all_reduce(t, group=world)
    cm.wait()
    for i, t in enumerate(tensors):
        same(t, sum(data(t.numel(), t.dtype, r, seed=9 if i == 3 else i) for r in range(size)), f"coalesced {i}")
    inputs = [data(3, torch.float32, seed=i) for i in range(2)]
    outputs = [torch.empty(3 * size) for _ in inputs]
    with _coalescing_manager(group=world):
        for o, i in zip(outputs, inputs, strict=True):
            dist.all_gather_into_tensor(o, i, group=world)
    for k, o in enumerate(outputs):
        same(o, torch.cat([data(3, torch.float32, r, seed=k) for r in range(size)]), f"coalesced all_gather {k}")
