"""``ZeroOneAdam``: 0/1 Adam (Lu et al., 2022), after DeepSpeed's ``ZeroOneAdam``.

Two stages, on every rank, with a step ``t`` counted from 1:

- **variance stage** (``t <= var_freeze_step``): the variance ``v`` is updated only at steps
  whose number is a multiple of ``var_interval``, from the gradients averaged uncompressed (with
  the momentum ``m`` from the same average); at every other step the gradients are averaged
  1-bit compressed (error feedback) and only ``m`` is updated. ``var_interval`` starts at 1 and
  doubles after every ``var_update_scaler`` variance updates. The update is
  ``w -= lr (m / (sqrt(v) + eps) + weight_decay w)`` (no bias correction, as in DeepSpeed);
- **local-step stage** (``t > var_freeze_step``; the residuals restart empty): each rank updates
  ``m`` with its *local* gradient and takes the step locally, accumulating ``lr`` and its updates
  (``state["lrs"]``, ``state["accumulator"]``: the summed ``-lr (m / (sqrt(v) + eps) + weight_decay w)``);
  every ``local_interval`` steps the ranks synchronize: the accumulated updates are averaged
  1-bit compressed, the parameters become those of the last synchronization plus that average,
  and ``m`` becomes the average times ``sqrt(v) + eps`` divided by ``-sum(lr)``.
  ``local_interval`` starts at 1 and doubles after every ``local_step_scaler`` steps, up to
  ``local_step_clipper``.

**What differs from DeepSpeed's, and why.** DeepSpeed compresses the gradient (variance stage)
and the accumulated updates times ``sqrt(v) + eps`` (synchronizations), both in the units of
``m``. Sign compression gives every element of a block the block's mean magnitude, and in ``m``'s
units that is far too large for an element whose variance is tiny or zero (a dead ReLU unit, an
always-blank input pixel): its step ``m / (sqrt(v) + eps)`` became that magnitude over
``sqrt(v) + eps``, up to ``1/eps``. On the digits MLP (lr 1e-3, 2 ranks) the first compressed step
moved such elements by 5 * 10^5 ``lr`` and training diverged within the first epoch. So here:

- what crosses the wire is **preconditioned**: ``g / (sqrt(v) + eps)`` in the variance stage, the
  accumulated updates themselves at synchronizations. In those units every element has Adam's
  unit scale, so a block's mean magnitude is a sensible step for each of its elements. ``v`` comes
  from averaged gradients only, so it is the same on every rank, and at a synchronization (``v``
  frozen) the average is exactly DeepSpeed's, divided by ``sqrt(v) + eps``. In the variance stage
  ``v`` changes at the dense steps: the residuals carry over as owed *steps* (not owed gradients),
  i.e. without rescaling by the change of ``sqrt(v)``, which is small after the first updates;
- a **mask**: elements whose variance is still exactly zero (their averaged gradient was zero at
  every dense step so far) are left out of the compressed vector; they take no momentum from
  compressed steps nor from local gradients (``m / eps`` would throw them away) and move only at
  the dense steps (which also give them a variance) or by weight decay (identically on every rank,
  so a synchronization leaves them as they are). The mask is recomputed from ``v`` before every
  compressed exchange, so it is the same on every rank; when it changes (at a dense step) the
  packed vector's layout changes and the residuals start empty again;
- a **clip against a stale variance**: ``v`` is not updated between its dense steps and is
  frozen after ``var_freeze_step``, so an element whose gradient outgrows it (a first-layer
  weight of a nearly dead unit or nearly blank pixel, whose variance froze at 1e-20) took steps
  of ``|g| / (sqrt(v) + eps)``, 10^3 - 10^6 ``lr`` on digits, uncompressed as well as
  compressed; compressed, one such value also sets the scale of its whole block, and the
  residuals deliver it again for many steps. Every gradient that meets ``v`` without updating it
  (compressed steps, local steps) is clipped to ``1 / sqrt(1 - beta2)`` times ``sqrt(v) + eps``:
  the largest ``|g| / sqrt(v)`` a variance updated with ``g`` admits, so a step stays within
  what Adam itself could take (31.6 ``lr`` for the default betas). Each rank clips its own
  gradient; ``v`` is the same everywhere. Without it the digits MLP diverged at lr 3e-3 (2 seeds
  of 3) and at lr 1e-3 with a 4-epoch variance stage (2 of 3; bench/RESULTS.md, issue 14,
  evening 2).

Between synchronizations the ranks' parameters differ (that is the algorithm); at a
synchronization they are set from a copy taken at the previous one, not by subtracting the local
steps again (DeepSpeed's way, whose rounding would let the ranks drift apart), so after it every
rank holds the same bits. ``synchronized`` says whether the last step ended with a
synchronization (evaluate, checkpoint or stop there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ...compression import Compressor, get
from ...errors import ArgumentError
from ...transport import as_comm
from . import checkpoint
from .exchange import compressed_average, dense_average, warmup_wire, wrap_compressor
from .steps import adam_moments, run_closure

_KEY = "zero-one-adam"
_SCHEDULE = ("var_interval", "var_counter", "local_interval", "local_counter")


class ZeroOneAdam(torch.optim.Optimizer):
    """0/1 Adam (see the module docstring).

    Args:
        params: parameters or groups, as for ``torch.optim.Adam``; the same on every rank.
        lr, betas, eps, weight_decay: per group (schedulers work); weight decay is added to the
            update, as in DeepSpeed.
        var_freeze_step: the last step of the variance stage.
        var_update_scaler: variance updates between doublings of their interval (kappa).
        local_step_scaler: steps between doublings of the local-step interval.
        local_step_clipper: the largest local-step interval (H).
        compressor: the 1-bit codec (default ``get("sign", block=256)``); error feedback is added.
        comm: the communicator; algorithm: the compressed path (``allgather_decode`` or
            ``two_phase``, ...; ``auto`` by the cost model).
        warmup_compressor: what the variance updates' averaged gradients cross the wire as:
            ``None`` (their own dtype, exact; the default) or ``get("bf16")`` (half the bytes),
            as for :class:`~mpicoll.torch.OneBitAdam`.

    ``traffic_bytes`` counts the bytes this rank has sent (:mod:`.traffic`).
    """

    #: the residuals' units in ``state_dict()``: 2 = preconditioned, ``m / (sqrt(v_hat) + eps)``
    #: (2026-11-30); 1 was the momentum's own units. Another format is refused on load.
    CHECKPOINT_FORMAT = 2

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, var_freeze_step: int = 100000,
                 var_update_scaler: int = 16, local_step_scaler: int = 32678, local_step_clipper: int = 16,
                 compressor: Compressor | None = None, comm: Any = None, algorithm: str = "auto",
                 warmup_compressor: Compressor | None = None) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ArgumentError(f"ZeroOneAdam: lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}; "
                                f"accepted: lr, eps, weight_decay >= 0 and betas in [0, 1)")
        counts = {"var_freeze_step": var_freeze_step, "var_update_scaler": var_update_scaler,
                  "local_step_scaler": local_step_scaler, "local_step_clipper": local_step_clipper}
        bad = {k: v for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
        if bad:
            raise ArgumentError(f"ZeroOneAdam: {bad}; accepted: integers >= 1")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        self.compressor = wrap_compressor(get("sign", block=256) if compressor is None else compressor, "ZeroOneAdam")
        self.comm, self.algorithm = as_comm(comm), algorithm
        self.warmup_compressor = warmup_wire(warmup_compressor, "ZeroOneAdam")
        self.var_freeze_step, self.var_update_scaler = var_freeze_step, var_update_scaler
        self.local_step_scaler, self.local_step_clipper = local_step_scaler, local_step_clipper
        self.steps = 0
        self.traffic_bytes = 0.0
        self.schedule = {"var_interval": 1, "var_counter": 0, "local_interval": 1, "local_counter": 0}
        self.synchronized = True
        #: per parameter: (eps, variance version) -> denominator, mask, the mask's flat indices
        #: (``None``: every element); they change only when the variance does (see _terms)
        self._terms_cache: dict[torch.Tensor, tuple[Any, ...]] = {}
        self._variance_version = 0

    def _entries(self) -> list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]:
        """(group, parameter, local gradient) for every parameter, zeros for no gradient."""
        return [(group, p, p.grad if p.grad is not None else torch.zeros_like(p))
                for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One 0/1 Adam step (see the module docstring)."""
        loss = run_closure(closure)
        entries = self._entries()
        adam_moments(self.state, (p for _, p, _ in entries))
        self.steps += 1
        if self.steps <= self.var_freeze_step:
            self._variance_step(entries)
        else:
            if self.steps == self.var_freeze_step + 1:  # residuals of gradients, not of accumulated momenta
                self.compressor.load_state_dict({})
            self._local_step(entries)
        return loss

    def _denominator(self, group: dict[str, Any], p: torch.Tensor) -> torch.Tensor:
        """``sqrt(v) + eps`` for ``p`` (no bias correction, as in DeepSpeed); read only."""
        return self._terms(group, p)[0]

    def _terms(self, group: dict[str, Any], p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """``p``'s denominator, mask ``v > 0`` and the mask's flat indices (``None``: no element
        masked), computed once per variance update: after ``var_freeze_step`` once for the run
        (square roots and boolean-mask indexing of every element, several times a step, cost
        more than the 1-bit exchange on the digits MLP)."""
        key = (group["eps"], self._variance_version)
        found = self._terms_cache.get(p)
        if found is None or found[0] != key:
            v = self.state[p]["exp_avg_sq"]
            mask = v > 0
            index = None if bool(mask.all()) else mask.reshape(-1).nonzero().squeeze(1)
            found = self._terms_cache[p] = (key, v.sqrt().add_(group["eps"]), mask, index)
        return found[1], found[2], found[3]

    @staticmethod
    def _bound(group: dict[str, Any]) -> float:
        """The largest ``|g| / sqrt(v)`` that ``v`` updated with ``g`` admits: ``1 / sqrt(1 - beta2)``."""
        return (1 - group["betas"][1]) ** -0.5

    def _masks(self, entries: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """``v > 0`` for every parameter: the elements that cross the wire (see the module docstring).

        ``v`` comes from averaged gradients only, so every rank computes the same masks. When they
        differ from those of the previous compressed exchange, the packed vector's layout changes
        and the residuals of the old layout are dropped (on every rank alike)."""
        masks = [self._terms(group, p)[1] for group, p, _ in entries]
        changed = False
        for (_, p, _), mask in zip(entries, masks, strict=True):
            state = self.state[p]
            old = state.get("mask")  # torch's load_state_dict casts it to the parameter's dtype
            if old is mask:  # the cached mask itself: unchanged since the last exchange
                continue
            if old is None or not torch.equal(old != 0, mask):
                changed = True
                state["mask"] = mask
        if changed:
            self.compressor.load_state_dict({})
        return masks

    def _compressed_mean(self, tensors: list[torch.Tensor], indices: list[Any]) -> list[torch.Tensor]:
        """The 1-bit compressed mean over ranks of ``tensors``' elements at ``indices`` (flat; ``None``:
        all, see :meth:`_terms`); zero elsewhere."""
        flat = torch.cat([t.reshape(-1) if index is None else t.reshape(-1).index_select(0, index)
                          for t, index in zip(tensors, indices, strict=True)]).contiguous()
        out = [torch.zeros_like(t) for t in tensors]
        if not flat.numel():  # nothing has a variance yet: the same on every rank
            return out
        mean, sent = compressed_average(flat, self.compressor, _KEY, self.comm, self.algorithm)
        self.traffic_bytes += sent
        offset = 0
        for full, index in zip(out, indices, strict=True):
            count = full.numel() if index is None else index.numel()
            part = mean[offset: offset + count].to(full.dtype)
            if index is None:
                full.copy_(part.reshape(full.shape))
            else:
                full.reshape(-1).index_copy_(0, index, part)
            offset += count
        return out

    def _indices(self, entries: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]) -> list[Any]:
        """The masks' flat indices of every parameter (after :meth:`_masks` has run)."""
        return [self._terms(group, p)[2] for group, p, _ in entries]

    def _variance_step(self, entries: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]) -> None:
        s = self.schedule
        update_variance = self.steps % s["var_interval"] == 0
        if update_variance:
            grads, sent = dense_average([g for _, _, g in entries], self.comm, self.warmup_compressor)
            self.traffic_bytes += sent
            for (group, p, _), g in zip(entries, grads, strict=True):
                b1, b2 = group["betas"]
                state = self.state[p]
                state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                state["exp_avg"].mul_(b1).add_(g.to(p.dtype), alpha=1 - b1)
            self._variance_version += 1  # denominators and masks are stale now
        else:  # the gradients cross the wire preconditioned by the current variance (module docstring)
            self._masks(entries)
            denominators = [self._denominator(group, p) for group, p, _ in entries]
            preconditioned = [(g / d).clamp_(-self._bound(group), self._bound(group))
                              for (group, _, g), d in zip(entries, denominators, strict=True)]
            steps = self._compressed_mean(preconditioned, self._indices(entries))
            for (group, p, _), step, d in zip(entries, steps, denominators, strict=True):
                b1 = group["betas"][0]
                self.state[p]["exp_avg"].mul_(b1).addcmul_(step, d, value=1 - b1)
        for group, p, _ in entries:
            p.add_(self._update(group, p), alpha=-group["lr"])
        if update_variance:
            s["var_counter"] += 1
            if s["var_counter"] == self.var_update_scaler:
                s["var_counter"], s["var_interval"] = 0, 2 * s["var_interval"]
        self.synchronized = True

    def _local_step(self, entries: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]) -> None:
        s = self.schedule
        for group, p, g in entries:
            state = self.state[p]
            if "anchor" not in state:  # the parameters at the last synchronization
                state["anchor"], state["accumulator"], state["lrs"] = p.detach().clone(), torch.zeros_like(p), 0.0
            state["lrs"] += group["lr"]
            # an element without variance takes no local momentum: m / eps would throw it away
            denominator, mask, _ = self._terms(group, p)
            local = torch.where(mask, g, 0.0)
            bound = denominator.mul(self._bound(group))  # a stale variance's clip
            local = local.clamp(-bound, bound)
            state["exp_avg"].mul_(group["betas"][0]).add_(local, alpha=1 - group["betas"][0])
            update = self._update(group, p)
            p.add_(update, alpha=-group["lr"])
            state["accumulator"].add_(update, alpha=-group["lr"])
        self.synchronized = self.steps % s["local_interval"] == 0
        if self.synchronized:
            self._synchronize(entries)
        s["local_counter"] += 1
        if s["local_counter"] == self.local_step_scaler:
            s["local_counter"], s["local_interval"] = 0, min(self.local_step_clipper, 2 * s["local_interval"])

    def _synchronize(self, entries: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor]]) -> None:
        masks = self._masks(entries)
        # the accumulated steps (the summed -lr m / (sqrt(v) + eps)) cross the wire as they are
        means = self._compressed_mean([self.state[p]["accumulator"] for _, p, _ in entries], self._indices(entries))
        for (group, p, _), mean, mask in zip(entries, means, masks, strict=True):
            state = self.state[p]
            if state["lrs"]:  # the averaged momentum: the summed -lr m over the summed lr
                state["exp_avg"].copy_(mean.mul(self._denominator(group, p)).div_(-state["lrs"]))
            # masked elements moved by weight decay alone, identically on every rank: they stay
            p.copy_(torch.where(mask, state["anchor"] + mean, p))
            state["anchor"].copy_(p)
            state["accumulator"].zero_()
            state["lrs"] = 0.0

    def _update(self, group: dict[str, Any], p: torch.Tensor) -> torch.Tensor:
        update = self.state[p]["exp_avg"] / self._denominator(group, p)
        return update.add_(p, alpha=group["weight_decay"]) if group["weight_decay"] else update

    def state_dict(self) -> dict[str, Any]:
        """torch's state (momenta, variances, masks, anchors, accumulators) plus the interval schedule,
        steps, world size and residuals."""
        state = checkpoint.attach(super().state_dict(), self, "ZeroOneAdam")
        state[checkpoint.STATE_KEY]["schedule"] = dict(self.schedule, synchronized=self.synchronized)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; refuses, on every rank and before anything changes, a checkpoint
        taken at another world size, by another optimizer class, or of another ``CHECKPOINT_FORMAT``."""
        rest, ours = checkpoint.split(state_dict, self, "ZeroOneAdam")
        super().load_state_dict(rest)
        checkpoint.apply(self, ours)
        self._terms_cache.clear()
        schedule = dict(ours["schedule"])
        self.synchronized = bool(schedule.pop("synchronized"))
        self.schedule = {k: schedule[k] for k in _SCHEDULE}
