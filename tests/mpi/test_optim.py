"""DGC and OneBitAdam under real MPI, step by step against single-process references of the same algorithms.

Gradients are set directly to small integers (different on every rank), so that every dense
average is exact in any summation order; the compressed paths used here add decoded payloads in
rank order, which the references do too. So the comparisons are bitwise, at every step.
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
from mpicoll.collectives.partition import even_counts  # noqa: E402
from mpicoll.compression import ErrorFeedback  # noqa: E402
from mpicoll.compression.base import Ctx  # noqa: E402


def run(comm, make, steps: int, lr_schedule=None, zero_rows=False, start=None, state=None):
    """Train the tensors of :func:`initial` with optimizer ``make(params)``; parameters after every step."""
    params = [torch.nn.Parameter(p.clone()) for p in (start if start is not None else initial())]
    opt = make(params)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule) if lr_schedule else None
    if state is not None:
        opt.load_state_dict(state[0])
        if sched is not None:
            sched.load_state_dict(state[1])
    history = []
    first = opt.steps
    for step in range(first, first + steps):
        for p, g in zip(params, grads(step, comm.rank, zero_rows), strict=True):
            p.grad = g.clone()
        opt.step()
        if sched is not None:
            sched.step()
        history.append([p.detach().clone() for p in params])
    return history, opt, sched


def assert_history(comm, got, want, what):
    assert_all(comm.mpi, len(got) == len(want), f"{what}: {len(got)} steps, want {len(want)}")
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        for i, (a, b) in enumerate(zip(g, w, strict=True)):
            assert_equal_all(comm.mpi, a.numpy(), b.numpy(), f"{what}: step {step + 1}, tensor {i}")


# ---------------------------------------------------------------------------------------- DGC reference
def dgc_reference(size, steps, *, lr, momentum, nesterov=False, weight_decay=0.0, codec, dense_steps=0,
                  warmup=None, masking=True, lr_schedule=None):
    """p simulated ranks in one process: momentum correction, velocity error feedback, masking."""
    params = initial()
    u = [[None] * len(params) for _ in range(size)]
    efs = [ErrorFeedback(codec()) for _ in range(size)]
    history = []
    for step in range(steps):
        rate = lr * (lr_schedule(step) if lr_schedule else 1.0)
        if warmup is not None:
            for ef in efs:
                ef.inner.ratio = warmup(step)
        sends = []
        for r in range(size):
            mine = []
            for i, (p, g) in enumerate(zip(params, grads(step, r), strict=True)):
                d = g.add(p, alpha=weight_decay) if weight_decay else g.clone()
                u[r][i] = d.clone() if u[r][i] is None else u[r][i].mul_(momentum).add_(d)
                mine.append(d.add(u[r][i], alpha=momentum) if nesterov else u[r][i].clone())
            sends.append(mine)
        for i, p in enumerate(params):
            total = np.zeros(p.numel(), dtype=np.float32)
            for r in range(size):
                if step < dense_steps:
                    total += sends[r][i].numpy().reshape(-1)
                    continue
                payload, ctx = efs[r].compress(sends[r][i].numpy(), key=("dgc", i))
                total += efs[r].decompress(payload, ctx).reshape(-1)
                if masking and efs[r].kind == "sparse":
                    idx, _ = efs[r].sparse_parts(payload, ctx)
                    u[r][i].view(-1)[torch.from_numpy(idx.astype(np.int64))] = 0
            total /= np.float32(size)
            p.add_(torch.from_numpy(total).reshape(p.shape), alpha=-rate)
        history.append([p.clone() for p in params])
    return history


def test_dgc_topk_warmup_nesterov_matches_reference(comm):
    size, steps = comm.size, 7
    dgc = dict(warmup_steps=4, warmup_density=0.5, warmup_stages=2)
    make = lambda ps: mt.DGC(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01,  # noqa: E731
                             compressor=compression.get("topk", ratio=0.1), min_compress_numel=0, comm=comm,
                             algorithm="sparse_allgather", **dgc)
    got, opt, _ = run(comm, make, steps)
    densities = [opt.density(s) for s in range(steps)]
    assert_all(comm.mpi, densities[:2] == [0.5, 0.5] and abs(densities[2] - 0.5 * (0.2) ** 0.5) < 1e-12
               and densities[4:] == [0.1] * 3, f"sparsity schedule {densities}")
    want = dgc_reference(size, steps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01,
                         codec=lambda: compression.get("topk", ratio=0.1), warmup=opt.density)
    assert_history(comm, got, want, "DGC top-k")


def test_dgc_sign_dense_warmup_boundary_and_scheduler(comm):
    size, steps = comm.size, 6
    schedule = lambda s: 1.0 / (1 + s)  # noqa: E731
    make = lambda ps: mt.DGC(ps, lr=0.25, momentum=0.5, compressor=compression.get("sign"), dense_steps=3,  # noqa: E731
                             min_compress_numel=0, comm=comm, algorithm="allgather_decode")
    got, _, _ = run(comm, make, steps, lr_schedule=schedule)
    want = dgc_reference(size, steps, lr=0.25, momentum=0.5, codec=lambda: compression.get("sign"),
                         dense_steps=3, lr_schedule=schedule)
    assert_history(comm, got, want, "DGC sign")
    sgd_params = [torch.nn.Parameter(p.clone()) for p in initial()]  # the dense steps are momentum SGD
    sgd = torch.optim.SGD(sgd_params, lr=0.25, momentum=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(sgd, schedule)
    for step in range(3):
        rank_grads = [grads(step, r) for r in range(size)]
        for i, p in enumerate(sgd_params):
            p.grad = sum(g[i] for g in rank_grads) / size
        sgd.step()
        sched.step()
        for i, p in enumerate(sgd_params):  # averaging momenta or gradients: equal up to rounding of / p
            assert_all(comm.mpi, torch.allclose(p.detach(), got[step][i], rtol=1e-6, atol=1e-7),
                       f"SGD step {step + 1} tensor {i}")


def test_dgc_none_is_momentum_sgd_on_averaged_gradients(comm):
    size = comm.size
    make = lambda ps: mt.DGC(ps, lr=0.1, momentum=0.9, nesterov=True, compressor=compression.get("none"),  # noqa: E731
                             comm=comm)
    got, _, _ = run(comm, make, 4)
    ref = [torch.nn.Parameter(p.clone()) for p in initial()]
    sgd = torch.optim.SGD(ref, lr=0.1, momentum=0.9, nesterov=True, foreach=False)
    for step in range(4):
        for i, p in enumerate(ref):
            p.grad = sum(g[i] for g in (grads(step, r) for r in range(size))) / size
        sgd.step()
    for i, p in enumerate(ref):
        assert_all(comm.mpi, torch.allclose(p.detach(), got[-1][i], rtol=1e-5, atol=1e-6),
                   f"tensor {i} differs from SGD")


# ---------------------------------------------------------------------------------- OneBitAdam reference
def two_phase_mean(efs, xs, key):
    """The two-phase compressed average of ``xs`` (one per simulated rank) with worker and server EF."""
    size, n = len(xs), xs[0].size
    counts = even_counts(n, size)
    starts = np.cumsum([0, *counts])
    chunks = [[efs[r].compress(xs[r][starts[j]: starts[j + 1]], key=(key, "chunk", j)) for j in range(size)]
              for r in range(size)]
    out = np.zeros(n, dtype=np.float32)
    for j in range(size):
        total = np.zeros(counts[j], dtype=np.float32)
        for r in range(size):
            payload = chunks[r][j][0]
            total += efs[j].decompress(payload, chunks[j][j][1]).astype(np.float32)
        total /= np.float32(size)  # the owner averages before it compresses again (float16 stays in range)
        payload, owner = efs[j].compress(total, key=(key, "owner"))
        out[starts[j]: starts[j + 1]] = efs[j].decompress(payload, Ctx((counts[j],), total.dtype, owner.key,
                                                                         owner.step, owner.device))
    return out


def onebit_reference(size, steps, *, lr, betas, eps, freeze, zero_rows):
    params = initial()
    b1, b2 = betas
    m = [[torch.zeros_like(p) for p in params] for _ in range(size)]  # per simulated rank
    v = [torch.zeros_like(p) for p in params]
    efs = [ErrorFeedback(compression.get("sign", block=256)) for _ in range(size)]
    history = []
    for t in range(1, steps + 1):
        rank_grads = [grads(t - 1, r, zero_rows) for r in range(size)]
        if t <= freeze:
            for i in range(len(params)):
                g = sum(rg[i] for rg in rank_grads) / size
                for r in range(size):
                    m[r][i].lerp_(g, 1 - b1)
                v[i].mul_(b2).addcmul_(g, g, value=1 - b2)
        else:
            masks = [vi > 0 for vi in v]
            denoms = [(vi.sqrt() / (1 - b2 ** freeze) ** 0.5).add_(eps) for vi in v]
            flats = []
            for r in range(size):
                for i in range(len(params)):  # a gradient is clipped against the frozen variance
                    bound = denoms[i] * (1 - b2) ** -0.5
                    m[r][i].lerp_(rank_grads[r][i].clamp(-bound, bound), 1 - b1)
                # the momentum is averaged preconditioned by the frozen variance: m / (sqrt(v_hat) + eps)
                flats.append(torch.cat([(m[r][i] / denoms[i])[masks[i]] for i in range(len(params))]).numpy())
            mean = torch.from_numpy(two_phase_mean(efs, flats, "onebit-adam"))
            updates = []
            for i in range(len(params)):
                offset = sum(int(mask.sum()) for mask in masks[:i])
                u = torch.zeros_like(params[i])
                u[masks[i]] = mean[offset: offset + int(masks[i].sum())]
                updates.append(u)
                for r in range(size):
                    m[r][i] = u * denoms[i]
            for i, p in enumerate(params):
                p.add_(updates[i], alpha=-lr / (1 - b1 ** t))
            history.append([p.clone() for p in params])
            continue
        for i, p in enumerate(params):
            denom = (v[i].sqrt() / (1 - b2 ** t) ** 0.5).add_(eps)
            p.addcdiv_(m[0][i], denom, value=-lr / (1 - b1 ** t))
        history.append([p.clone() for p in params])
    return history


def test_onebit_adam_matches_reference_with_mask(comm):
    make = lambda ps: mt.OneBitAdam(ps, lr=0.01, freeze_step=3, comm=comm)  # noqa: E731
    got, opt, _ = run(comm, make, 7, zero_rows=True)
    want = onebit_reference(comm.size, 7, lr=0.01, betas=(0.9, 0.999), eps=1e-8, freeze=3, zero_rows=True)
    assert_history(comm, got, want, "OneBitAdam")
    frozen_row = got[-1][0][2]
    assert_equal_all(comm.mpi, frozen_row.numpy(), initial()[0][2].numpy(), "masked row (always-zero gradient)")
    assert_all(comm.mpi, bool((opt.state[opt.param_groups[0]["params"][0]]["exp_avg"][2] == 0).all()),
               "masked momentum stays zero")


def largest_onebit_step(comm, lr, steps, element0):
    """OneBitAdam (freeze after 3 steps) on 512 weights with gradients ~1e-2 (the same draws on
    every rank), element 0's gradient replaced by ``element0(t)`` unless that is None; the largest
    move of any element in one step."""
    weights = torch.nn.Parameter(torch.zeros(512))
    opt = mt.OneBitAdam([weights], lr=lr, freeze_step=3, comm=comm)
    rng = torch.Generator().manual_seed(7)
    largest = 0.0
    for t in range(1, steps + 1):
        g = (torch.randn(comm.size, 512, generator=rng) * 1e-2)[comm.rank].clone()
        if element0(t) is not None:
            g[0] = element0(t)
        weights.grad = g
        before = weights.detach().clone()
        opt.step()
        largest = max(largest, float((weights.detach() - before).abs().max()))
    return largest


def test_onebit_adam_steps_stay_adam_sized_after_a_tiny_warmup_variance(comm):
    """An element whose gradient was tiny during the warm-up (a rare input feature, say) has a
    tiny frozen variance. Sign compression gives every element of a block the block's mean
    magnitude; compressing the raw momentum then moved that element by lr * scale / sqrt(v), about
    10^4 lr here, and training diverged (the digits MLP at lr 1e-3, any freeze step). The momentum
    is compressed preconditioned instead, where every element has Adam's unit scale."""
    lr = 1e-3
    largest = largest_onebit_step(comm, lr, 12, lambda t: 1e-6 if t == 1 else 0.0)  # one tiny gradient, then none
    assert_all(comm.mpi, largest < 20 * lr, f"an element moved {largest / lr:.0f} lr in one step")


def test_onebit_adam_clips_a_gradient_that_outgrows_the_frozen_variance(comm):
    """Element 0's variance comes from one gradient of 1e-6 in the warm-up; after the freeze it
    gets gradients of 1e-2 like the others (a weight of a nearly dead unit, the digits MLP:
    there it stepped up to 10^4 lr and training collapsed). Its u = m / (sqrt(v_hat) + eps) was
    ~10^4 and set the scale of its whole sign block: unclipped, its neighbours stepped up to 29
    lr and it drifted 185 lr in 12 steps. Clipped to 1 / sqrt(1 - beta2) times sqrt(v_hat) + eps,
    every element steps by Adam's unit (at most 1 lr here)."""
    lr = 1e-3
    largest = largest_onebit_step(comm, lr, 15, lambda t: (1e-6 if t == 1 else 0.0) if t <= 3 else None)
    assert_all(comm.mpi, largest < 5 * lr, f"an element moved {largest / lr:.0f} lr in one step")


def test_onebit_adam_warmup_is_adam(comm):
    size = comm.size
    got, _, _ = run(comm, lambda ps: mt.OneBitAdam(ps, lr=0.01, weight_decay=0.1, freeze_step=10, comm=comm), 4)
    ref = [torch.nn.Parameter(p.clone()) for p in initial()]
    adam = torch.optim.Adam(ref, lr=0.01, weight_decay=0.1, foreach=False)
    for step in range(4):
        for i, p in enumerate(ref):
            p.grad = sum(g[i] for g in (grads(step, r) for r in range(size))) / size
        adam.step()
        for i, p in enumerate(ref):
            assert_all(comm.mpi, torch.allclose(p.detach(), got[step][i], rtol=1e-6, atol=1e-7),
                       f"step {step + 1} tensor {i} differs from torch.optim.Adam")


WARMUP_MAKERS = {
    "onebit": lambda comm, wire: lambda ps: mt.OneBitAdam(ps, lr=0.01, freeze_step=10, comm=comm,
                                                          warmup_compressor=wire),
    "zeroone": lambda comm, wire: lambda ps: mt.ZeroOneAdam(ps, lr=0.01, var_freeze_step=10, comm=comm,
                                                            warmup_compressor=wire),
}


def warmup_run(comm, make, steps: int = 4):
    """``steps`` dense steps on gradients that bf16 cannot hold exactly (thirds of rank-dependent
    integers), of one sign per element on every rank (bf16 rounds each rank's gradient, so where
    they cancel its error is relative to theirs, not to their mean, and Adam scales a near-zero
    mean up to a whole step); the parameters after the last step, and the bytes this rank sent."""
    params = [torch.nn.Parameter(p.clone()) for p in initial()]
    opt = make(params)
    for step in range(steps):
        for p, g in zip(params, grads(step, comm.rank), strict=True):
            p.grad = (g.abs() + 1) / 3 * p.detach().sign()
        opt.step()
    return [p.detach().clone() for p in params], opt.traffic_bytes


@pytest.mark.parametrize("name", sorted(WARMUP_MAKERS))
def test_bf16_warmup_halves_its_bytes_and_stays_adam(comm, name):
    """``warmup_compressor=get("bf16")``: the dense steps send half the bytes (plus a payload
    header), every rank holds the same bits, and the steps stay within bf16's rounding of the exact
    warm-up's (a relative 2^-8 on each gradient, well under 1% of one step here)."""
    exact, exact_bytes = warmup_run(comm, WARMUP_MAKERS[name](comm, None))
    half, half_bytes = warmup_run(comm, WARMUP_MAKERS[name](comm, compression.get("bf16")))
    numel = sum(t.numel() for t in initial())
    per_step = 2 * (comm.size - 1) / comm.size  # a ring all-reduce's share of its buffer
    want = 4 * per_step * compression.get("bf16").payload_nbytes(np.zeros(numel, np.float32))
    assert_all(comm.mpi, exact_bytes == 4 * per_step * 4 * numel and half_bytes == want,
               f"bf16 warm-up sent {half_bytes} bytes (want {want}) against {exact_bytes} exact")
    for i, (h, e, start) in enumerate(zip(half, exact, initial(), strict=True)):
        assert_same_on_all_ranks(comm.mpi, h.numpy(), f"bf16 warm-up, tensor {i}")
        moved = float((e - start).abs().max())
        assert_all(comm.mpi, float((h - e).abs().max()) <= 0.05 * moved,
                   f"tensor {i}: bf16 warm-up is {float((h - e).abs().max())} from the exact one ({moved} moved)")


def test_a_lossy_warmup_compressor_is_refused(comm):
    ps = [torch.nn.Parameter(torch.zeros(3))]
    for wire in (compression.get("fp16"), compression.get("sign"), ErrorFeedback(compression.get("bf16")), "bf16"):
        for make in (mt.OneBitAdam, mt.ZeroOneAdam):
            with pytest.raises(mpicoll.UnsupportedError, match="warmup_compressor"):
                make(ps, comm=comm, warmup_compressor=wire)


# ------------------------------------------------------------------------------- checkpoints, world size
MAKERS = {
    "dgc-topk": lambda comm: lambda ps: mt.DGC(ps, lr=0.05, compressor=compression.get("topk", ratio=0.2),
                                               warmup_steps=4, min_compress_numel=0, comm=comm),
    "dgc-qsgd": lambda comm: lambda ps: mt.DGC(ps, lr=0.05, compressor=compression.get("qsgd"), dense_steps=1,
                                               comm=comm),
    "onebit": lambda comm: lambda ps: mt.OneBitAdam(ps, lr=0.01, freeze_step=2, comm=comm),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_checkpoint_round_trip_mid_run(comm, name):
    make, schedule = MAKERS[name](comm), (lambda s: 0.9 ** s)
    straight, _, _ = run(comm, make, 7, lr_schedule=schedule)
    first, opt, sched = run(comm, make, 3, lr_schedule=schedule)
    saved = (copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict()))
    resumed, opt2, _ = run(comm, make, 4, lr_schedule=schedule, start=first[-1], state=saved)
    assert_all(comm.mpi, opt2.steps == 7, f"steps after resume: {opt2.steps}")
    assert_history(comm, first + resumed, straight, f"{name} resumed")


def assert_refused(comm, opt, state, match):
    """Loading ``state`` raises ArgumentError matching ``match`` on every rank and changes nothing
    (``opt`` has taken 3 steps)."""
    before = [p.detach().clone() for p in opt.param_groups[0]["params"]]
    with pytest.raises(mpicoll.ArgumentError, match=match):
        opt.load_state_dict(state)
    assert_all(comm.mpi, opt.steps == 3 and all(torch.equal(a, b) for a, b in
                                            zip(before, opt.param_groups[0]["params"], strict=True)),
               "a refused load changed the optimizer")


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_checkpoint_from_another_world_size_is_refused(comm, name):
    _, opt, _ = run(comm, MAKERS[name](comm), 3)
    state = opt.state_dict()
    state["mpicoll"]["world_size"] = comm.size + 1
    assert_refused(comm, opt, state, "ranks")


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_checkpoint_of_another_format_is_refused(comm, name):
    """Residuals saved in other units (an older format, or none named: format 1) are refused on
    every rank before anything changes; the optimizer's own format loads."""
    _, opt, _ = run(comm, MAKERS[name](comm), 3)
    fmt = getattr(opt, "CHECKPOINT_FORMAT", 1)
    state = opt.state_dict()
    assert_all(comm.mpi, state["mpicoll"]["format"] == fmt, f"saved format {state['mpicoll']['format']}")
    old = copy.deepcopy(state)
    old["mpicoll"]["format"] = fmt + 1
    if fmt > 1:  # a checkpoint from before the field existed is format 1
        del old["mpicoll"]["format"]
    assert_refused(comm, opt, old, "format")
    if fmt == 1:  # checkpoints saved before the field existed still load where the format is 1
        older = copy.deepcopy(state)
        del older["mpicoll"]["format"], older["mpicoll"]["owner"]
        opt.load_state_dict(older)
    opt.load_state_dict(state)


def test_a_mixed_set_of_checkpoint_files_is_refused_on_every_rank(comm):
    """Every rank loads its own file; one wrong file (here rank 0's, of another format) must stop
    all ranks, not leave the others loaded."""
    _, opt, _ = run(comm, MAKERS["onebit"](comm), 3)
    state = opt.state_dict()
    if comm.rank == 0:
        state["mpicoll"]["format"] = 1
    assert_refused(comm, opt, state, "format 1" if comm.size == 1 else "rank 0's checkpoint")


def test_checkpoint_of_another_optimizer_is_refused(comm):
    """OneBitAdam and ZeroOneAdam share a format; neither loads the other's state."""
    _, opt, _ = run(comm, MAKERS["onebit"](comm), 3)
    state = opt.state_dict()
    other = mt.ZeroOneAdam([torch.nn.Parameter(p.detach().clone()) for p in opt.param_groups[0]["params"]],
                           var_freeze_step=2, comm=comm)
    with pytest.raises(mpicoll.ArgumentError, match="saved by OneBitAdam"):
        other.load_state_dict(state)
    assert_all(comm.mpi, other.steps == 0 and not other.state, "a refused load changed the optimizer")


# ------------------------------------------------------------------------------------------ arguments
def test_bad_arguments_are_refused(comm):
    ps = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(mpicoll.UnsupportedError, match="low-rank"):
        mt.DGC(ps, lr=0.1, compressor=compression.get("powersgd"), comm=comm)
    with pytest.raises(mpicoll.ArgumentError, match="dense_steps"):
        mt.DGC(ps, lr=0.1, compressor=compression.get("sign"), warmup_steps=10, comm=comm)
    with pytest.raises(mpicoll.ArgumentError, match="momentum"):
        mt.DGC(ps, lr=0.1, momentum=1.5, comm=comm)
    with pytest.raises(mpicoll.ArgumentError, match="freeze_step"):
        mt.OneBitAdam(ps, freeze_step=0, comm=comm)
    with pytest.raises(mpicoll.ArgumentError, match="no 'mpicoll' entry"):
        mt.OneBitAdam(ps, comm=comm).load_state_dict(torch.optim.Adam(ps).state_dict())


def test_hook_state_dense_warmup():
    sign = ErrorFeedback(compression.get("sign"))
    assert mt.HookState(sign, warmup_steps=10).compress_from == 10
    assert mt.HookState(sign).compress_from == 2  # DDP's bucket rebuild still comes first
    with pytest.raises(mpicoll.ArgumentError, match="warmup_steps"):
        mt.HookState(sign, warmup_steps=-3)


def test_dgc_local_gradient_clipping(comm):
    size, limit = comm.size, 5.0
    make = lambda ps: mt.DGC(ps, lr=0.1, momentum=0.9, compressor=compression.get("none"), clip_norm=limit,  # noqa: E731
                             comm=comm)
    got, _, _ = run(comm, make, 3)
    ref = [torch.nn.Parameter(p.clone()) for p in initial()]
    sgd = torch.optim.SGD(ref, lr=0.1, momentum=0.9, foreach=False)
    for step in range(3):
        clipped = []
        for r in range(size):  # each rank clips its own gradients to limit / sqrt(p), as in the paper
            local = grads(step, r)
            norm = float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in local])))
            coef = min(1.0, limit / size ** 0.5 / (norm + 1e-6))
            clipped.append([g * coef for g in local])
        for i, p in enumerate(ref):
            p.grad = sum(c[i] for c in clipped) / size
        sgd.step()
        for i, p in enumerate(ref):
            assert_all(comm.mpi, torch.allclose(p.detach(), got[step][i], rtol=1e-5, atol=1e-6),
                       f"step {step + 1} tensor {i}")


def test_distributed_optimizer_dense_warmup(comm):
    params = [torch.nn.Parameter(p.clone()) for p in initial()]
    ef = ErrorFeedback(compression.get("sign"))
    opt = mt.DistributedOptimizer(torch.optim.SGD(params, lr=0.1), [(f"p{i}", p) for i, p in enumerate(params)],
                                  compressor=ef, comm=comm, warmup_steps=2)
    for step in range(3):
        opt.zero_grad()
        loss = sum((p * g).sum() for p, g in zip(params, grads(step, comm.rank), strict=True))
        loss.backward()
        opt.step()
        assert_all(comm.mpi, bool(ef.residuals) == (step == 2), f"step {step + 1}: residuals {list(ef.residuals)}")
    opt.remove_hooks()


def test_hook_state_refuses_another_world_size(comm):
    state = mt.HookState(ErrorFeedback(compression.get("sign")), comm=comm)
    saved = state.state_dict()
    state.load_state_dict(saved)  # same size: fine
    saved["world_size"] = comm.size + 2
    with pytest.raises(mpicoll.ArgumentError, match="ranks"):
        state.load_state_dict(saved)
