"""``OneBitAdam``: Adam whose momentum crosses the wire at one bit per element (Tang et al., 2021).

Two stages, on every rank:

- **warm-up** (steps ``1 .. freeze_step``): plain Adam (``torch.optim.Adam``'s update, L2
  ``weight_decay`` added to the gradient) on gradients averaged over the ranks, uncompressed;
- **compression** (after ``freeze_step``): the variance ``v`` is frozen (with its bias correction
  of step ``freeze_step``); each rank updates its momentum with its *local* gradient,
  ``m = b1 m + (1 - b1) g``, then the momenta are all-reduced with ``sign`` compression over the
  two-phase path with error feedback: each rank keeps a residual of its own compression (worker
  error) and each chunk owner one of its re-compressed sum (server error), as in the paper. The
  averaged momentum replaces ``m`` on every rank, and ``w -= lr m_hat / (sqrt(v_hat) + eps)``.

**Preconditioned on the wire** (unlike the paper): what is compressed is ``u = m / (sqrt(v_hat) +
eps)``, the step itself, not ``m``. With ``v`` frozen and equal on every rank this is the same
average (the division is a fixed per-element scaling, so it commutes with the mean and with the
momentum's recursion), but sign compression gives every element of a block the block's mean
magnitude, and in ``m``'s units that mean is far too large for an element whose variance is tiny
(a rarely active input feature): it moved by ``lr * scale / sqrt(v)``, 10^4 ``lr`` in the test,
and the digits MLP diverged at lr 1e-3 whatever the warm-up. In ``u``'s units every element has
Adam's unit scale, so a compressed step stays Adam-sized. The error-feedback residuals are in
``u``'s units too (``v`` never changes after the freeze, so they stay valid).

**Clip** (unlike the paper): a variance frozen after a short warm-up is stale for an element
whose gradient later outgrows it (a first-layer weight of a nearly dead unit or a nearly blank
pixel, variance ~1e-20 at the freeze): it stepped ``|g| / (sqrt(v_hat) + eps)``, up to 10^4
``lr`` on the digits MLP, where training collapsed at lr 1e-3 (seed 0) and diverged at 3e-3 (2
seeds of 3) with a one-epoch warm-up; compressed, such a value also sets its block's scale and
comes back through the residuals. Uncompressed (codec ``none``) it collapsed as well at lr 3e-3.
Each rank's gradient is therefore clipped, before it enters the momentum, to
``1 / sqrt(1 - beta2)`` times ``sqrt(v_hat) + eps``: the largest ``|g| / sqrt(v)`` that a
variance updated with ``g`` admits (31.6 for the default betas), so a step stays within what
Adam itself could take. Gradients of the size the warm-up saw are about 31.6 times below it
(bench/RESULTS.md, issue 14, evening 2).

**Mask**: elements whose variance is still exactly zero at ``freeze_step`` had a zero gradient
at every warm-up step (unused embedding rows, say). Sign compression would give them a
``+-scale`` every step and its residual would accumulate there; they are left out of the
compressed vector instead, and their momentum stays zero.

All momenta are packed into one flat vector (the mask's elements only), compressed in ``p``
chunks with one scale per 256 elements by default (``get("sign", block=256)``: 1.125 bits per
element). One scale per chunk, as in the paper's implementation, mixes layers of very different
magnitudes: on the char-LM of ``examples/train_charlm.py`` it ended 3.0% above Adam's validation
loss, against 0.16% with blocks of 256 (bench/RESULTS.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ...compression import Compressor, get
from ...errors import ArgumentError
from ...transport import as_comm
from . import checkpoint
from .exchange import compressed_average, dense_average, warmup_wire, wrap_compressor
from .steps import adam_moments, run_closure

_KEY = "onebit-adam"


class _Frozen:
    """What one parameter's compressed steps reuse, derived from the frozen variance: the
    denominator ``sqrt(v_hat) + eps``, the clip bound, the mask's flat indices (``None``: every
    element), the number of elements on the wire, and a scratch tensor of the parameter's shape
    (the clipped gradient, then the preconditioned momentum or the step of a masked parameter),
    so a step allocates none of these model-sized temporaries (the all-reduce's result still is
    one). It holds one parameter-sized scratch per parameter, and :attr:`OneBitAdam._flat` the
    packed momenta, for the optimizer's life."""

    __slots__ = ("bound", "count", "denominator", "index", "key", "work")

    def __init__(self, key: tuple[Any, ...], denominator: torch.Tensor, bound: torch.Tensor, index: Any) -> None:
        self.key, self.denominator, self.bound, self.index = key, denominator, bound, index
        self.count = denominator.numel() if index is None else index.numel()
        self.work = torch.empty(denominator.shape, dtype=denominator.dtype, device=denominator.device)  # contiguous


class OneBitAdam(torch.optim.Optimizer):
    """1-bit Adam (see the module docstring).

    Args:
        params: parameters or groups, as for ``torch.optim.Adam``; the same on every rank.
        lr, betas, eps, weight_decay: as for ``torch.optim.Adam`` (per group; schedulers work).
        freeze_step: the last warm-up step (uncompressed Adam); compression starts after it.
        compressor: the momentum codec (default ``get("sign", block=256)``); error feedback is added.
        comm: the communicator; algorithm: the compressed path (``two_phase``: worker and server
            error compensation; ``allgather_decode``: worker error only, no second compression).
        warmup_compressor: what the warm-up's averaged gradients cross the wire as: ``None``, their
            own dtype (exact, the default), or ``get("bf16")``: half the bytes of float32 (8
            significant bits, float32's range), as DeepSpeed's 1-bit Adam sends the warm-up's
            gradients in a model trained in 16 bits. The warm-up is what bounds the whole run's
            compression (bench/RESULTS.md, issue 14).

    ``traffic_bytes`` counts the gradient/momentum bytes this rank has sent (:mod:`.traffic`).
    """

    #: the residuals' units in ``state_dict()``: 2 = preconditioned, ``m / (sqrt(v_hat) + eps)``
    #: (2026-11-30); 1 was the momentum's own units. Another format is refused on load.
    CHECKPOINT_FORMAT = 2

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, freeze_step: int = 1000,
                 compressor: Compressor | None = None, comm: Any = None, algorithm: str = "two_phase",
                 warmup_compressor: Compressor | None = None) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ArgumentError(f"OneBitAdam: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}; "
                                f"accepted: lr, eps, weight_decay >= 0 and betas in [0, 1)")
        if not isinstance(freeze_step, int) or freeze_step < 1:
            raise ArgumentError(f"OneBitAdam: freeze_step={freeze_step!r}; accepted: an integer >= 1 (the variance "
                                f"needs at least one uncompressed step)")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        self.compressor = wrap_compressor(get("sign", block=256) if compressor is None else compressor, "OneBitAdam")
        self.comm, self.algorithm, self.freeze_step = as_comm(comm), algorithm, freeze_step
        self.warmup_compressor = warmup_wire(warmup_compressor, "OneBitAdam")
        self.steps = 0
        self.traffic_bytes = 0.0
        #: per parameter, once frozen: its :class:`_Frozen` terms, derived from the frozen variance
        self._frozen_cache: dict[torch.Tensor, _Frozen] = {}
        self._flat: torch.Tensor | None = None  # the packed momenta, kept between steps

    @property
    def frozen(self) -> bool:
        """Whether the variance is frozen (the next step compresses)."""
        return self.steps >= self.freeze_step

    def _entries(self) -> list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]:
        """(group, parameter, gradient with L2 weight decay) for every parameter, zeros for no gradient."""
        out = []
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                out.append((group, p, g.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else g))
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Adam step: uncompressed until ``freeze_step``, then with 1-bit momentum."""
        loss = run_closure(closure)
        entries = self._entries()
        adam_moments(self.state, (p for _, p, _ in entries))
        self.steps += 1
        if self.steps <= self.freeze_step:
            self._warmup_step(entries)
        else:
            self._compressed_step(entries)
        return loss

    def _warmup_step(self, entries: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]) -> None:
        grads, sent = dense_average([g for _, _, g in entries], self.comm, self.warmup_compressor)
        self.traffic_bytes += sent
        t = self.steps
        for (group, p, _), g in zip(entries, grads, strict=True):
            b1, b2 = group["betas"]
            state = self.state[p]
            state["exp_avg"].lerp_(g, 1 - b1)
            state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
            # torch.optim.Adam's update
            p.addcdiv_(state["exp_avg"], self._denominator(group, p, t), value=-group["lr"] / (1 - b1 ** t))

    def _compressed_step(self, entries: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]) -> None:
        terms = []
        for group, p, _ in entries:
            state = self.state[p]
            if "mask" not in state:  # the same on every rank: v comes from averaged gradients
                state["mask"] = state["exp_avg_sq"] > 0
            elif state["mask"].dtype != torch.bool:  # torch's load_state_dict casts state to the parameter's dtype
                state["mask"] = state["mask"] != 0
            terms.append(self._frozen_terms(group, p))
        flat = self._flat_buffer(sum(t.count for t in terms), [p for _, p, _ in entries])
        offset = 0
        for (group, p, g), t in zip(entries, terms, strict=True):
            m = self.state[p]["exp_avg"]
            torch.neg(t.bound, out=t.work)  # the clip (module docstring), into the scratch: g.clamp(-bound, bound)
            m.lerp_(torch.clamp(g, t.work, t.bound, out=t.work), 1 - group["betas"][0])
            # the momentum crosses the wire preconditioned by the frozen variance (see the module docstring)
            if t.index is None:
                torch.div(m, t.denominator, out=flat[offset: offset + t.count].view(m.shape))
            else:
                torch.div(m, t.denominator, out=t.work)
                if flat.dtype == t.work.dtype:
                    torch.index_select(t.work.reshape(-1), 0, t.index, out=flat[offset: offset + t.count])
                else:  # parameters of several dtypes: packed in their promoted dtype, as torch.cat would
                    flat[offset: offset + t.count] = t.work.reshape(-1).index_select(0, t.index)
            offset += t.count
        averaged, sent = compressed_average(flat, self.compressor, _KEY, self.comm, self.algorithm)
        self.traffic_bytes += sent
        offset = 0
        for (group, p, _), t in zip(entries, terms, strict=True):
            m = self.state[p]["exp_avg"]
            part = averaged[offset: offset + t.count].to(m.dtype)
            offset += t.count
            if t.index is None:
                step = part.reshape(m.shape)
            else:  # masked elements step 0 and keep a zero momentum
                step = t.work.zero_().reshape(-1).index_copy_(0, t.index, part).reshape(m.shape)
            torch.mul(step, t.denominator, out=m)
            p.add_(step, alpha=-group["lr"] / (1 - group["betas"][0] ** self.steps))

    def _flat_buffer(self, count: int, params: list[torch.Tensor]) -> torch.Tensor:
        """The one flat vector the momenta are packed into (the parameters' promoted dtype, as
        ``torch.cat`` gives), kept between steps: a fresh 4 MB array a step costs its page faults."""
        dtype = functools.reduce(torch.promote_types, (p.dtype for p in params))
        flat = self._flat
        if flat is None or flat.numel() != count or flat.dtype != dtype or flat.device != params[0].device:
            flat = self._flat = torch.empty(count, dtype=dtype, device=params[0].device)
        return flat

    def _frozen_terms(self, group: dict[str, Any], p: torch.Tensor) -> _Frozen:
        """``p``'s frozen terms (:class:`_Frozen`), computed once per freeze: they depend only on the
        frozen variance, the mask, ``betas[1]``, ``eps`` and ``freeze_step`` (boolean-mask indexing
        of every element and two square roots per step cost ~40 ms a step on a 1.1 M-parameter
        MLP, more than the 1-bit exchange)."""
        key = (group["betas"][1], group["eps"], self.freeze_step)
        found = self._frozen_cache.get(p)
        if found is None or found.key != key:
            denominator = self._denominator(group, p, self.freeze_step)
            bound = denominator * (1 - key[0]) ** -0.5
            mask = self.state[p]["mask"]
            index = None if bool(mask.all()) else mask.reshape(-1).nonzero().squeeze(1)
            found = self._frozen_cache[p] = _Frozen(key, denominator, bound, index)
        return found

    def _denominator(self, group: dict[str, Any], p: torch.Tensor, t: int) -> torch.Tensor:
        """Adam's ``sqrt(v_hat) + eps`` for ``p`` with ``v`` bias-corrected at step ``t``."""
        b2 = group["betas"][1]
        return (self.state[p]["exp_avg_sq"].sqrt() / (1 - b2 ** t) ** 0.5).add_(group["eps"])

    def state_dict(self) -> dict[str, Any]:
        """torch's state (momenta, frozen variances, masks) plus steps, world size and residuals."""
        return checkpoint.attach(super().state_dict(), self, "OneBitAdam")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; refuses, on every rank and before anything changes, a checkpoint
        taken at another world size, by another optimizer class, or of another ``CHECKPOINT_FORMAT``."""
        rest, ours = checkpoint.split(state_dict, self, "OneBitAdam")
        super().load_state_dict(rest)
        checkpoint.apply(self, ours)
        self._frozen_cache.clear()
