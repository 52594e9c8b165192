"""ZeroOneAdam under real MPI, step by step against a single-process reference (p simulated ranks).

Gradients are small integers, so the dense averages of the variance steps are exact in any
order; the compressed averages run on ``allgather_decode``, which adds the decoded payloads in
rank order, as the reference does. So every rank's parameters equal the reference's bit for bit
at every step, local steps included.
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

HYPER = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
SCHEDULE = dict(var_freeze_step=5, var_update_scaler=2, local_step_scaler=2, local_step_clipper=4)


def train(comm, steps, *, start=None, state=None, lr_schedule=None, gradients=grads):
    params = [torch.nn.Parameter(p.clone()) for p in (start if start is not None else initial())]
    opt = mt.ZeroOneAdam(params, **HYPER, **SCHEDULE, comm=comm, algorithm="allgather_decode")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule) if lr_schedule else None
    if state is not None:
        opt.load_state_dict(state[0])
        if sched is not None:
            sched.load_state_dict(state[1])
    history, first = [], opt.steps
    for step in range(first, first + steps):
        for p, g in zip(params, gradients(step, comm.rank), strict=True):
            p.grad = g.clone()
        opt.step()
        if sched is not None:
            sched.step()
        history.append(([p.detach().clone() for p in params], opt.synchronized))
    return history, opt, sched


def compressed_mean(efs, flats):
    total = np.zeros(flats[0].size, dtype=np.float32)
    for ef, x in zip(efs, flats, strict=True):
        payload, ctx = ef.compress(x, key="k")
        total += ef.decompress(payload, ctx).reshape(-1)
    return total / np.float32(len(flats))


def split_like(flat, like):
    parts = np.split(flat, np.cumsum([t.numel() for t in like])[:-1])
    return [torch.from_numpy(part.copy()).reshape(t.shape) for part, t in zip(parts, like, strict=True)]


def late_grads(step, rank):
    """:func:`grads` with an always-zero row (masked throughout) and a row of tensor 2 that is
    zero for the first three steps: masked at step 3, given a variance by the dense step 4, so the
    mask (and the packed vector's layout) changes at step 5."""
    out = grads(step, rank, zero_rows=True)
    if step < 3:
        out[2][1] = 0
    return out


def masked(tensors, masks):
    return torch.cat([t[mask] for t, mask in zip(tensors, masks, strict=True)]).numpy()


def unmasked(flat, masks):
    out, offset = [], 0
    for mask in masks:
        full = torch.zeros(mask.shape)
        count = int(mask.sum())
        full[mask] = torch.from_numpy(flat[offset: offset + count].copy())
        offset += count
        out.append(full)
    return out


def reference(size, steps, lr_schedule=None, gradients=grads):
    """Every rank's parameters after every step (see the module docstring of ZeroOneAdam: what
    crosses the wire is preconditioned by sqrt(v) + eps, and only where v > 0; a gradient is
    clipped to 1 / sqrt(1 - beta2) times sqrt(v) + eps where v is stale)."""
    b1, b2, eps, wd = HYPER["betas"][0], HYPER["betas"][1], HYPER["eps"], HYPER["weight_decay"]
    bound = (1 - b2) ** -0.5  # the clip of a gradient against a stale variance
    params = [[p.clone() for p in initial()] for _ in range(size)]
    m = [[torch.zeros_like(p) for p in params[0]] for _ in range(size)]
    v = [torch.zeros_like(p) for p in params[0]]
    efs = [ErrorFeedback(compression.get("sign", block=256)) for _ in range(size)]
    vi, vc, li, lc = 1, 0, 1, 0
    anchor = acc = lrs = None
    last_masks = None
    history = []

    def exchange(tensors_per_rank):
        """The compressed mean of every rank's tensors where v > 0 (residuals restart when that changes)."""
        nonlocal efs, last_masks
        masks = [vi_ > 0 for vi_ in v]
        if last_masks is None or not all(torch.equal(a, b) for a, b in zip(masks, last_masks, strict=True)):
            efs = [ErrorFeedback(compression.get("sign", block=256)) for _ in range(size)]
            last_masks = masks
        flats = [masked(tensors_per_rank[r], masks) for r in range(size)]
        return unmasked(compressed_mean(efs, flats), masks), masks

    for t in range(1, steps + 1):
        lr = HYPER["lr"] * (lr_schedule(t - 1) if lr_schedule else 1.0)
        local = [gradients(t - 1, r) for r in range(size)]
        denoms = lambda: [vi_.sqrt().add_(eps) for vi_ in v]  # noqa: E731

        def update(r, i):
            u = m[r][i] / v[i].sqrt().add_(eps)
            return u.add_(params[r][i], alpha=wd)

        if t <= SCHEDULE["var_freeze_step"]:
            dense = t % vi == 0
            if dense:
                avg = [sum(g[i] for g in local) / size for i in range(len(v))]
                for i in range(len(v)):
                    v[i].mul_(b2).addcmul_(avg[i], avg[i], value=1 - b2)
                    for r in range(size):
                        m[r][i].mul_(b1).add_(avg[i], alpha=1 - b1)
            else:  # the gradients preconditioned by the current variance
                d = denoms()
                mean, _ = exchange([[(local[r][i] / d[i]).clamp_(-bound, bound) for i in range(len(v))]
                                    for r in range(size)])
                for i in range(len(v)):
                    for r in range(size):
                        m[r][i].mul_(b1).addcmul_(mean[i], d[i], value=1 - b1)
            for i in range(len(v)):
                for r in range(size):
                    params[r][i].add_(update(r, i), alpha=-lr)
            if dense:
                vc += 1
                if vc == SCHEDULE["var_update_scaler"]:
                    vc, vi = 0, 2 * vi
            synced = True
        else:
            if anchor is None:
                efs = [ErrorFeedback(compression.get("sign", block=256)) for _ in range(size)]
                anchor = [[p.clone() for p in params[r]] for r in range(size)]
                acc = [[torch.zeros_like(p) for p in params[r]] for r in range(size)]
                lrs = [0.0] * size
            for r in range(size):
                lrs[r] += lr
                for i in range(len(v)):
                    clip = v[i].sqrt().add_(eps).mul_(bound)
                    g = torch.where(v[i] > 0, local[r][i], 0.0).clamp(-clip, clip)
                    m[r][i].mul_(b1).add_(g, alpha=1 - b1)
                    u = update(r, i)
                    params[r][i].add_(u, alpha=-lr)
                    acc[r][i].add_(u, alpha=-lr)
            synced = t % li == 0
            if synced:  # the accumulated steps themselves cross the wire
                mean, masks = exchange(acc)
                d = denoms()
                for r in range(size):
                    for i in range(len(v)):
                        m[r][i].copy_(mean[i].mul(d[i]).div_(-lrs[r]))
                        params[r][i].copy_(torch.where(masks[i], anchor[r][i] + mean[i], params[r][i]))
                        anchor[r][i].copy_(params[r][i])
                        acc[r][i].zero_()
                    lrs[r] = 0.0
            lc += 1
            if lc == SCHEDULE["local_step_scaler"]:
                lc, li = 0, min(SCHEDULE["local_step_clipper"], 2 * li)
        history.append(([[p.clone() for p in params[r]] for r in range(size)], synced))
    return history


def assert_matches(comm, got, want, what):
    assert_all(comm.mpi, len(got) == len(want), f"{what}: {len(got)} steps, want {len(want)}")
    for step, ((mine, synced), (every, want_synced)) in enumerate(zip(got, want, strict=True)):
        assert_all(comm.mpi, synced == want_synced, f"{what}: step {step + 1} synchronized={synced}")
        for i, (a, b) in enumerate(zip(mine, every[comm.rank], strict=True)):
            assert_equal_all(comm.mpi, a.numpy(), b.numpy(), f"{what}: step {step + 1}, tensor {i}")
            if synced:
                assert_same_on_all_ranks(comm.mpi, a.numpy(), f"{what}: step {step + 1}, tensor {i}")


SLOW = lambda s: 0.95 ** s  # noqa: E731


def test_zero_one_adam_matches_reference(comm):
    got, _, _ = train(comm, 14, lr_schedule=SLOW)
    want = reference(comm.size, 14, lr_schedule=SLOW)
    # variance stage 1-5; local interval 1, 1, 2, 2, 4, ... (doubling every 2 steps, at most 4)
    assert_all(comm.mpi, [s for _, s in want] == [True] * 8 + [False, False, False, True, False, False],
               f"synchronizations {[s for _, s in want]}")
    assert_matches(comm, got, want, "ZeroOneAdam")


def test_zero_one_adam_mask_matches_reference(comm):
    """Elements without variance stay out of the wire, and a mask that grows at a dense step
    restarts the residuals: still equal to the reference at every step."""
    got, _, _ = train(comm, 14, lr_schedule=SLOW, gradients=late_grads)
    want = reference(comm.size, 14, lr_schedule=SLOW, gradients=late_grads)
    assert_matches(comm, got, want, "ZeroOneAdam masked")
    start = initial()[0][2]  # the always-zero row moved by weight decay alone
    row = got[-1][0][0][2]
    assert_all(comm.mpi, bool((row.abs() <= start.abs()).all() and (row * start >= 0).all()),
               f"masked row {row} from {start}")


def largest_steps(comm, codec, wake=False):
    """ZeroOneAdam on 512 elements, both stages: (the largest step of elements 0 and 1, the largest
    of any element), in lr. Element 0 has one tiny gradient at step 1 and none after (a rare input
    feature; with ``wake``, gradients as large as the others' after the variance stage), element 1
    none at all (an always-blank pixel, a dead unit); the others noise."""
    lr, n = 1e-3, 512
    weights = torch.nn.Parameter(torch.zeros(n))
    opt = mt.ZeroOneAdam([weights], lr=lr, var_freeze_step=12, var_update_scaler=2, local_step_scaler=4,
                         local_step_clipper=4, compressor=codec, comm=comm)
    rng = torch.Generator().manual_seed(7)
    rare = anywhere = 0.0
    for t in range(1, 31):
        noise = torch.randn(comm.size, n, generator=rng) * 1e-2  # the same draws on every rank
        g = noise[comm.rank].clone()
        if t == 1 or t <= 12 or not wake:
            g[0] = 1e-6 if t == 1 else 0.0
        g[1] = 0.0
        weights.grad = g
        before = weights.detach().clone()
        opt.step()
        moved = (weights.detach() - before).abs() / lr
        rare, anywhere = max(rare, float(moved[:2].max())), max(anywhere, float(moved.max()))
    return rare, anywhere


def test_zero_one_adam_steps_stay_adam_sized_with_a_tiny_or_zero_variance(comm):
    """Sign compression gives every element of a block the block's mean magnitude. DeepSpeed's
    compression of the raw gradient (variance stage) and of the accumulated momentum
    (synchronizations) then moved element 0 by that magnitude over sqrt(v) and element 1 over eps
    (10^4 - 10^6 lr; the digits MLP diverged in its first epoch). Preconditioned and masked, they
    move by a few lr, and no element steps much further than uncompressed 0/1 Adam's largest step
    (which is large itself: a stale variance, no bias correction)."""
    rare, anywhere = largest_steps(comm, None)
    _, uncompressed = largest_steps(comm, compression.get("none"))
    assert_all(comm.mpi, rare < 20, f"the rare or the dead element moved {rare:.0f} lr in one step")
    assert_all(comm.mpi, anywhere < 2 * uncompressed,
               f"largest step {anywhere:.0f} lr, uncompressed 0/1 Adam's {uncompressed:.0f} lr")


def test_zero_one_adam_clips_a_gradient_that_outgrows_a_stale_variance(comm):
    """The digits MLP with a 4-epoch variance stage diverged in the local steps (2 seeds of 3):
    first-layer weights whose variance froze at 1e-20 (nearly dead units or blank pixels) then met gradients of 1e-4 to
    3e-2 and stepped 10^3 - 10^6 lr. Element 0 here: variance from one gradient of 1e-6, then
    gradients of 1e-2 after the freeze. Clipped to 1 / sqrt(1 - beta2) times its sqrt(v) + eps, as
    if v had been updated with it, it steps at most about that many lr (31.6)."""
    rare, anywhere = largest_steps(comm, None, wake=True)
    assert_all(comm.mpi, rare < 40 and anywhere < 40, f"largest steps {rare:.0f} lr (element 0), {anywhere:.0f} lr")


def test_zero_one_adam_checkpoint_mid_local_steps(comm):
    straight, _, _ = train(comm, 13, lr_schedule=SLOW)
    first, opt, sched = train(comm, 9, lr_schedule=SLOW)
    assert_all(comm.mpi, not opt.synchronized or comm.size == 1, "step 9 should be a local step")
    saved = (copy.deepcopy(opt.state_dict()), copy.deepcopy(sched.state_dict()))
    resumed, opt2, _ = train(comm, 4, start=first[-1][0], state=saved, lr_schedule=SLOW)
    assert_all(comm.mpi, opt2.steps == 13, f"steps after resume {opt2.steps}")
    for step, ((a, sa), (b, sb)) in enumerate(zip(first + resumed, straight, strict=True)):
        assert_all(comm.mpi, sa == sb, f"step {step + 1}: synchronized {sa} vs {sb}")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal_all(comm.mpi, x.numpy(), y.numpy(), f"resumed: step {step + 1}, tensor {i}")
    moved = copy.deepcopy(saved[0])
    moved["mpicoll"]["world_size"] = comm.size + 1
    with pytest.raises(mpicoll.ArgumentError, match="ranks"):
        opt2.load_state_dict(moved)
    older = copy.deepcopy(saved[0])
    del older["mpicoll"]["format"]  # saved before residuals were preconditioned: format 1
    with pytest.raises(mpicoll.ArgumentError, match="format 1"):
        opt2.load_state_dict(older)


def test_zero_one_adam_bad_arguments(comm):
    ps = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(mpicoll.ArgumentError, match="var_freeze_step"):
        mt.ZeroOneAdam(ps, var_freeze_step=0, comm=comm)
    with pytest.raises(mpicoll.UnsupportedError, match="low-rank"):
        mt.ZeroOneAdam(ps, compressor=compression.get("powersgd"), comm=comm)
