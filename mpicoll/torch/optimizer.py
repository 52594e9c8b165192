"""``DistributedOptimizer``: data-parallel training without DDP, in the manner of Horovod.

It is a ``torch.optim.Optimizer`` that wraps another one and shares its ``param_groups``,
``state`` and ``defaults`` (properties that read and write the wrapped optimizer's), so LR
schedulers, ``torch.amp.GradScaler``, step hooks and checkpoints see one optimizer. Horovod
instead builds a dynamic subclass of the wrapped optimizer's class and re-creates it from its
``param_groups``: that needs the class constructor to accept nothing but the parameters, and
leaves the user's optimizer object, with any state it had, behind. Sharing keeps any optimizer
(custom ones with required constructor arguments too) and its state, with one fixed class.

Each parameter gets a post-accumulate-grad hook. When a gradient is final (after
``backward_passes_per_step`` backward passes), the hook marks it ready in
:class:`~mpicoll.aggregation.GradientBuckets`; a bucket whose gradients are all ready starts its
non-blocking (compressed) all-reduce at once, while backward goes on through earlier layers.
At the end of that backward pass (as DDP does) the round finishes: gradients no hook produced
are contributed as zeros, the ranks agree on how many of them still train and which parameters
got a gradient anywhere (one small all-reduce, while the buckets are still in flight), and
``.grad`` then holds the averages. So everything between ``backward()`` and ``step()``
(gradient clipping, ``GradScaler.unscale_`` and its inf check) sees the averaged gradients,
bitwise identical on every rank. A rank that ran no backward pass does its round in ``step()``:
no rank ever skips one, so ranks never pair off by one.

The averaging rule: in each round with ``A`` ranks still training (all of them unless some
have :meth:`DistributedOptimizer.join`-ed), a parameter's gradient becomes the sum over those
``A`` ranks of their gradients divided by ``A`` (``op="sum"``: the sum); a rank that did not use
the parameter contributes zeros. A parameter that no rank used keeps its ``.grad`` untouched
(``None`` after ``zero_grad()``), so weight decay and momentum leave it alone, as under DDP.
Buckets never change (except through :meth:`add_param_group`), so error-feedback residuals (one
per bucket) stay valid; they are saved in, and restored from, :meth:`state_dict`.

*Momentum correction* (``momentum_correction="auto"``, the rule in
:func:`mpicoll.torch.optim.momentum.corrects`): when the wrapped optimizer is ``torch.optim.SGD``
and the compressor is error feedback around a lossy, not low-rank codec (sign, top-k, int8 ...),
error feedback on the gradient under heavy-ball momentum can diverge (sign + EF at lr 0.1-0.2 on
digits). Then, for every group with ``momentum != 0``, each rank keeps its own momentum
``u = m u + (g + weight_decay w)`` (``state["momentum_buffer"]``, dampening and maximize as SGD
does them) and the buckets carry the *velocity* ``u`` (Nesterov: ``d + m u``) through the
compressor, exactly as :class:`~mpicoll.torch.DGC` does (the same code); with
``momentum_masking=True`` and a sparse codec the momentum is also zeroed where the velocity went
out (DGC's momentum factor masking, on paths that keep one residual per bucket; off by default,
see the argument). ``.grad`` then holds the averaged velocity and the wrapped SGD steps
those groups with momentum, weight decay, Nesterov and dampening already applied (set to 0 for
the duration of its ``step``): ``w -= lr * average``. Without compression it is momentum SGD on
averaged gradients. So with correction: gradient clipping or ``GradScaler`` between
``backward()`` and ``step()`` act on the averaged velocity, not the gradient (use ``DGC(clip_norm=)``
for local clipping; turn correction off with a ``GradScaler``); every parameter of a corrected
group moves every step, by its momentum, as in DGC, even if no rank used it; the momenta differ
between ranks, so :meth:`state_dict` records the world size and loading it on another refuses.
The DDP hook (:class:`~mpicoll.torch.HookState`) cannot do this: it sees gradient buckets, not the
optimizer, its momentum or its learning rate; use this class or ``DGC`` there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from ..aggregation import GradientBuckets
from ..aggregation.autocodec import resolve_compressor
from ..compression import Compressor
from ..errors import ArgumentError, UsageError
from ..transport import as_comm
from .agreement import StepAgreement
from .join import Join, shadow
from .named import OPS, check_named, check_settings, named_parameters_of, placeholder
from .optim import momentum
from .tensors import as_array

_STATE_KEY = "mpicoll"
_OWN_KEY = "mpicoll_optimizer"  # world size, momentum correction, dense warm-up position


class DistributedOptimizer(torch.optim.Optimizer):
    """Wrap ``optimizer`` so that ``step()`` uses gradients averaged over all ranks.

    Args:
        optimizer: any ``torch.optim.Optimizer``; its ``param_groups``, ``state`` and
            ``defaults`` become this object's (shared, not copied).
        named_parameters: ``model.named_parameters()``; names key the buckets and must be unique
            and the same on every rank. ``None``: names made from the param groups' positions.
            Every parameter of ``optimizer`` that requires a gradient must be named.
        compressor: ``None`` (plain average), an mpicoll compressor, e.g.
            ``ErrorFeedback(get("topk", ratio=0.01))``, or ``"auto"`` / an
            :class:`~mpicoll.aggregation.AutoCodec` (per bucket, the codec the cost model predicts
            fastest, or none).
        backward_passes_per_step: backward passes (micro-batches) whose gradients accumulate
            locally, as in plain PyTorch, before one all-reduce at the end of the last of them;
            gradients are their sum, so scale the loss by ``1 / backward_passes_per_step`` for a mean.
        op: ``"avg"`` (the mean over the ranks that train) or ``"sum"``.
        gradient_predivide_factor: with ``op="avg"``, gradients are multiplied by
            ``1 / gradient_predivide_factor`` before the sum and by ``gradient_predivide_factor / A``
            after it (Horovod's option, against overflow in low precision).
        bucket_bytes: fusion buffer size (DDP's ``bucket_cap_mb``; default 25 MiB).
        comm, algorithm: as for :func:`mpicoll.allreduce`.
        warmup_steps: steps averaged uncompressed before ``compressor`` is used (dense warm-up,
            see :class:`~mpicoll.aggregation.GradientBuckets`).
        momentum_correction: ``"auto"`` (default), ``True`` or ``False``: all-reduce each rank's
            momentum-corrected velocity instead of its gradient (see the module docstring; auto:
            SGD with an error-feedback, lossy, not low-rank compressor).
        momentum_masking: with momentum correction and a sparse codec, zero each rank's momentum
            where its velocity was sent (DGC's momentum factor masking). Off by default: on the
            digits grid it cost top-k 1% 1.6 points at lr 0.02 and 0.8 at 0.05 (bench/RESULTS.md).

    Making one is collective: the ranks check that they passed the same parameters.
    """

    def __init__(self, optimizer: torch.optim.Optimizer,
                 named_parameters: Iterable[tuple[str, torch.Tensor]] | None = None, *,
                 compressor: Compressor | None = None, backward_passes_per_step: int = 1, op: str = "avg",
                 gradient_predivide_factor: float = 1.0, bucket_bytes: int = 25 << 20, comm: Any = None,
                 algorithm: str = "auto", warmup_steps: int = 0, momentum_correction: bool | str = "auto",
                 momentum_masking: bool = False) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer) or isinstance(optimizer, DistributedOptimizer):
            raise ArgumentError(f"DistributedOptimizer wraps a torch.optim.Optimizer (not a distributed one), "
                                f"got {type(optimizer).__name__}")
        self.__dict__["optimizer"] = optimizer  # first: param_groups, state and defaults read it
        # torch's own bookkeeping (step and state-dict hook registries, the profiling wrapper of
        # step) exactly as unpickling an optimizer restores it, without touching the shared groups
        torch.optim.Optimizer.__setstate__(self, {})
        self.compressor, self.backward_passes_per_step = resolve_compressor(compressor), backward_passes_per_step
        self.op, self.predivide = OPS.get(op, op), float(gradient_predivide_factor)
        self._settings = {"bucket_bytes": bucket_bytes, "comm": comm, "algorithm": algorithm,
                          "warmup_steps": warmup_steps}
        self._size = as_comm(comm).size
        self._agreement = StepAgreement.of(comm)
        self._plans = 0
        self._hooks: list[Any] = []
        named, error, self.momentum_correction = [], None, False
        try:  # a refusal on one rank is a refusal on every rank (the plan is agreed collectively)
            check_settings(backward_passes_per_step, op, self.predivide)
            self.momentum_correction = momentum.corrects(optimizer, compressor, momentum_correction)
            named = named_parameters_of(optimizer, named_parameters)
        except ArgumentError as exc:
            error = str(exc)
        self._plan(named, error)
        self.momentum_masking = bool(momentum_masking)
        self._velocities: dict[str, torch.Tensor] = {}  # name -> this round's velocity (corrected groups)
        self._groups: dict[int, dict[str, Any]] | None = None
        self._callback_queued = self._pending = self._synced = self._skip = False
        self._backward_passes = 0
        self.steps = 0  #: optimizer steps taken; :meth:`join` syncs state from a rank with the most

    # --- what torch.optim.Optimizer users touch: the wrapped optimizer's, shared -------------------
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    @property
    def _step_supports_amp_scaling(self) -> bool:  # fused optimizers take GradScaler's scale themselves
        return bool(getattr(self.optimizer, "_step_supports_amp_scaling", False))

    def __getattr__(self, name: str) -> Any:  # anything else the wrapped optimizer has
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self.optimizer!r})"

    # --- the bucket plan and the hooks --------------------------------------------------------------
    def _plan(self, named: list[tuple[str, torch.Tensor]], error: str | None = None) -> None:
        """(Re)build buckets, hooks and the agreement vector for ``named``. Collective."""
        try:
            if error is None:
                check_named(self.optimizer, named)
        except ArgumentError as exc:
            error = str(exc)
        self._agreement.check_same("DistributedOptimizer", [(n, tuple(p.shape), str(p.dtype)) for n, p in named],
                                   error)
        if error is not None:
            raise ArgumentError(error)
        for handle in self._hooks:
            handle.remove()
        self._named = named
        prefix = "optimizer-bucket" if not self._plans else f"optimizer-plan{self._plans}-bucket"
        self._plans += 1
        average = self.op == "avg" and self.predivide == 1.0
        self.buckets = GradientBuckets([(n, placeholder(p)) for n, p in named], compressor=self.compressor,
                                       average=average, key_prefix=prefix, **self._settings)
        self._passes = dict.fromkeys((n for n, _ in named), 0)
        self._offsets: dict[str, int] | None = None  # name -> start in its bucket (momentum masking)
        self._zeros: dict[str, torch.Tensor] = {}
        self._local = np.zeros(1 + len(named), dtype=np.int32)
        self._agreed = np.zeros_like(self._local)
        self._hooks = [p.register_post_accumulate_grad_hook(self._make_hook(n)) for n, p in named]

    def _make_hook(self, name: str) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            self._passes[name] += 1
            self._pending = True
            if not self._callback_queued:  # finish the round when this backward pass ends
                torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
                self._callback_queued = True
            if self._passes[name] > self.backward_passes_per_step:
                raise UsageError(f"DistributedOptimizer: {self._passes[name]} backward passes reached {name!r} "
                                   f"in one round of backward_passes_per_step={self.backward_passes_per_step}")
            if self._passes[name] == self.backward_passes_per_step:
                self.buckets.ready(name, self._outgoing(name, param, param.grad))
        return hook

    def _outgoing(self, name: str, param: torch.Tensor, grad: torch.Tensor) -> Any:
        """What this rank all-reduces for ``name``: its gradient, or in a corrected group its velocity."""
        group = self._group_of(param) if self.momentum_correction else None
        if group is not None and group["momentum"] != 0:
            with torch.no_grad():
                grad = self._velocities[name] = momentum.velocity(self.state[param], group, param, grad)
        if self.predivide != 1.0:
            grad.mul_(1.0 / self.predivide)
        return as_array(grad)

    def _group_of(self, param: torch.Tensor) -> dict[str, Any]:
        """``param``'s group now (looked up once per round: load_state_dict replaces the group dicts)."""
        if self._groups is None:
            self._groups = {id(p): group for group in self.param_groups for p in group["params"]}
        return self._groups[id(param)]

    def _end_of_backward(self) -> None:
        self._callback_queued = False
        self._backward_passes += 1
        if self._backward_passes >= self.backward_passes_per_step:
            self._round()

    # --- one round: every rank, every step ---------------------------------------------------------
    def _round(self) -> None:
        """Hand every gradient not yet handed over to the buckets (zeros for parameters this rank
        did not use), agree on how many ranks train and which parameters were used anywhere, wait
        for the buckets and put the averages in ``.grad``."""
        local = self._local
        local[0] = 1
        for i, (name, param) in enumerate(self._named):
            passes = self._passes[name]
            local[1 + i] = passes > 0
            if passes < self.backward_passes_per_step:  # else its hook handed it over already
                self.buckets.ready(name, self._unused(name, param) if not passes
                                   else self._outgoing(name, param, param.grad))
        agreed = self._agreement.sum(local, self._agreed)  # the buckets travel meanwhile
        self.buckets.wait()
        self._place(agreed, int(agreed[0]))
        self._passes = dict.fromkeys(self._passes, 0)
        self._pending, self._synced, self._backward_passes, self._groups = False, True, 0, None

    def _unused(self, name: str, param: torch.Tensor) -> Any:
        """This rank's contribution for a parameter it did not use: zeros, or in a corrected group
        the velocity of a zero gradient (the momentum goes on, as in DGC)."""
        zero = self._zero(name, param)
        if self.momentum_correction and self._group_of(param)["momentum"] != 0:
            return self._outgoing(name, param, zero)  # velocity() reads the zeros, never writes them
        return as_array(zero)

    def _shadow_round(self) -> int:
        """A joined rank's round: ask first how many ranks still train; if any, take part in their
        buckets with zeros. Returns that number (0: everyone is done)."""
        self._local[:] = 0
        ranks = int(self._agreement.sum(self._local, self._agreed)[0])
        if ranks:
            for name, param in self._named:
                self.buckets.ready(name, as_array(self._zero(name, param)))
            self.buckets.wait()
            for zero in self._zeros.values():
                zero.zero_()
        return ranks

    def _zero(self, name: str, param: torch.Tensor) -> torch.Tensor:
        zero = self._zeros.get(name)
        if zero is None:
            zero = self._zeros[name] = torch.zeros_like(param, memory_format=torch.contiguous_format)
        return zero

    def _place(self, agreed: np.ndarray, ranks: int) -> None:
        scale = {"sum": 1.0, "avg": self._size / ranks if self.predivide == 1.0 else self.predivide / ranks}[self.op]
        with torch.no_grad():
            for i, (name, param) in enumerate(self._named):
                if name in self._velocities:  # corrected: every rank sent a velocity, all of them apply it
                    self._place_velocity(name, param, scale)
                    continue
                zero = self._zeros.get(name) if not self._passes[name] else None
                if not agreed[1 + i]:  # no rank used it: its gradient stays as it was, as under DDP
                    if zero is not None:
                        zero.zero_()
                    continue
                if zero is not None:  # used elsewhere only: the average arrived in the zeros
                    if param.grad is None:
                        param.grad = self._zeros.pop(name)
                    else:
                        param.grad.copy_(zero)
                        zero.zero_()
                if scale != 1.0:
                    param.grad.mul_(scale)

    def _place_velocity(self, name: str, param: torch.Tensor, scale: float) -> None:
        """The averaged velocity becomes ``.grad``; momentum factor masking for sparse codecs."""
        average = self._velocities.pop(name)
        if scale != 1.0:
            average.mul_(scale)
        if param.grad is None:
            param.grad = average
        else:
            param.grad.copy_(average)
        left = self._residual(name)
        if left is not None:
            momentum.mask(self.state[param], left)

    def _residual(self, name: str) -> Any:
        """``name``'s slice of its bucket's error-feedback residual after this round, when the codec
        is sparse and the path keeps one residual per bucket (else ``None``: no masking)."""
        compressor = self.compressor
        if (not self.momentum_masking or compressor is None or compressor.kind != "sparse"
                or not hasattr(compressor, "residual")):
            return None
        bucket = self.buckets.bucket_of[name]
        # GradientBuckets keys a bucket's compressed all-reduce f"{key_prefix}{index}"
        left = compressor.residual(f"{self.buckets.key_prefix}{bucket.index}")
        if left is None or self.buckets.steps <= self.buckets.warmup_steps:  # not compressed this round
            return None
        if self._offsets is None:
            self._offsets = {n: b.offsets[j] for b in self.buckets.buckets for j, n in enumerate(b.names)}
        start = self._offsets[name]
        return left.reshape(-1)[start: start + int(self.buckets.arrays[name].size)]

    # --- the public torch.optim.Optimizer interface -------------------------------------------------
    def synchronize(self) -> None:
        """Finish this step's round if it has not happened yet (a rank that ran no backward pass, or
        a short accumulation of fewer than ``backward_passes_per_step`` passes): ``.grad`` then
        holds the averages. ``step()`` calls it; Horovod-style code may call it first."""
        if self._pending or not self._synced:
            self._round()

    @contextlib.contextmanager
    def skip_synchronize(self) -> Iterator[None]:
        """Inside, ``step()`` does not synchronize (Horovod's pattern after an explicit
        :meth:`synchronize`)."""
        self._skip = True
        try:
            yield
        finally:
            self._skip = False

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Synchronize (unless a closure runs the backward pass, whose end does), then step the
        wrapped optimizer (with momentum correction: the closure runs first, then the wrapped
        SGD steps corrected groups without momentum and weight decay, already applied)."""
        loss = None
        if closure is not None and self.momentum_correction:  # its backward must see the real momentum
            with torch.enable_grad():
                loss = closure()
            closure = None
        if closure is None and not self._skip:
            self.synchronize()
        forwarded = [k for k in ("grad_scale", "found_inf") if k in self.__dict__]  # GradScaler, fused path
        for key in forwarded:
            setattr(self.optimizer, key, self.__dict__[key])
        try:
            with momentum.applied(self.param_groups if self.momentum_correction else []):
                if closure is None:
                    stepped = self.optimizer.step()
                    loss = stepped if loss is None else loss
                else:
                    loss = self.optimizer.step(closure)
        finally:
            for key in forwarded:
                delattr(self.optimizer, key)
        self.steps += 1
        self._synced = False
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``; also starts a new step (its round is still to come)."""
        self.optimizer.zero_grad(set_to_none=set_to_none)
        self._synced = self._callback_queued = False

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer and re-plan the buckets. Collective; call it on every
        rank between steps. Error-feedback residuals start afresh (the buckets changed)."""
        if self._pending:
            raise ArgumentError("DistributedOptimizer.add_param_group: gradients are in flight; call step() first")
        self.optimizer.add_param_group(param_group)
        index = len(self.param_groups) - 1
        names = self.param_groups[-1].get("param_names") or [f"param_group{index}.{i}"
                                                              for i in range(len(self.param_groups[-1]["params"]))]
        new = [(n, p) for n, p in zip(names, self.param_groups[-1]["params"], strict=True) if p.requires_grad]
        self._plan(self._named + new)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state (with momentum correction: this rank's momenta) plus this
        rank's error-feedback residuals, the world size and the dense warm-up's position."""
        state = self.optimizer.state_dict()
        if self.compressor is not None:
            state[_STATE_KEY] = self.compressor.state_dict()
        state[_OWN_KEY] = {"world_size": self._size, "momentum_correction": self.momentum_correction,
                           "buckets": self.buckets.state_dict()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (residuals included). A state saved with momentum correction
        holds per-rank momenta: it is refused (``ArgumentError`` on every rank, nothing changed) at
        another world size, or by an optimizer without correction (its ranks would step apart)."""
        state = dict(state_dict)
        ours, own = state.pop(_STATE_KEY, None), state.pop(_OWN_KEY, None)
        if own is not None:
            momentum.check_checkpoint(own, self._size, self.momentum_correction)
        self.optimizer.load_state_dict(state)
        if ours is not None and self.compressor is not None:
            self.compressor.load_state_dict(ours)
        if own is not None:
            self.buckets.load_state_dict(own["buckets"])
        self._groups = None

    # --- uneven inputs ------------------------------------------------------------------------------
    def join(self) -> Join:
        """``with opt.join(): <this rank's training loop>``: when the loop ends, this rank takes part
        with zeros in the other ranks' rounds until every rank's loop has ended, so uneven numbers
        of batches finish instead of hanging. Averages are over the ranks still training (see the
        module docstring); at the end, ranks that stepped less get the parameters and optimizer
        state of the lowest rank that stepped most. ``Join.last_rank`` names that rank. Every rank
        must use it; only this optimizer's collectives are shadowed."""
        return Join(self)

    def shadow(self) -> int:
        """This rank has no more data: what :meth:`join` does when its block ends (Horovod's
        ``hvd.join()``). Collective; returns the rank whose state everyone now has."""
        return shadow(self)

    def remove_hooks(self) -> None:
        """Detach from the parameters (the wrapped optimizer keeps working alone)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
