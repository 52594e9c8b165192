"""Momentum correction (Lin et al., 2018): compress the local momentum, not the gradient.

Error feedback on the *gradient* under heavy-ball momentum can diverge: the residual re-enters
the gradient, the momentum multiplies it by ``1 / (1 - m)`` (10x at ``m = 0.9``), and a biased
codec such as sign then overshoots at the learning rates where uncompressed training is best.
Momentum correction keeps the momentum on each rank, ``u = m u + d`` with
``d = g + weight_decay * w``, and sends the *velocity* ``u`` (Nesterov: ``d + m u``) through the
error-feedback codec; the average of the velocities is then applied as a plain SGD step. Without
compression this is momentum SGD on averaged gradients again (averaging is linear).

The one home of the rule and the arithmetic, used by :class:`~mpicoll.torch.DGC` (which always
corrects) and by :class:`~mpicoll.torch.DistributedOptimizer` (``momentum_correction="auto"``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ...compression import Compressor, ErrorFeedback
from ...errors import ArgumentError

#: the SGD group settings a corrected step has already applied (the wrapped update runs without them)
APPLIED = {"momentum": 0.0, "weight_decay": 0.0, "nesterov": False, "dampening": 0.0, "maximize": False}


def corrects(optimizer: torch.optim.Optimizer, compressor: Compressor | None, setting: Any) -> bool:
    """Whether :class:`~mpicoll.torch.DistributedOptimizer` applies momentum correction.

    ``"auto"``: when ``optimizer`` is a ``torch.optim.SGD`` and ``compressor`` is an
    :class:`~mpicoll.compression.ErrorFeedback` around a lossy codec that is not low-rank (sign,
    top-k, int8, qsgd ...): error feedback under momentum is what diverges. Not for ``None``, a
    codec without error feedback (fp16 ...) or a lossless one: nothing changes there. Not for
    PowerSGD, whose error feedback on the gradient is PyTorch's ``powerSGD_hook`` and trains at
    every learning rate of the digits grid (bench/RESULTS.md). ``True`` forces it (any codec, or
    none: then it equals momentum SGD on averaged gradients up to rounding), ``False`` disables it.
    Groups with ``momentum == 0`` are never corrected. Raises ``ArgumentError`` for another value,
    or ``True`` around an optimizer that is not SGD (its momentum could not be taken out).
    """
    if not (isinstance(setting, bool) or (isinstance(setting, str) and setting == "auto")):
        raise ArgumentError(f"DistributedOptimizer: momentum_correction={setting!r}; accepted: 'auto', True, False")
    is_sgd = isinstance(optimizer, torch.optim.SGD)
    if setting is True and not is_sgd:
        raise ArgumentError(f"DistributedOptimizer: momentum_correction=True needs a torch.optim.SGD (its momentum, "
                            f"weight decay and Nesterov are applied before the all-reduce), got "
                            f"{type(optimizer).__name__}")
    if setting != "auto":
        return bool(setting)
    return (is_sgd and isinstance(compressor, ErrorFeedback) and not compressor.lossless
            and compressor.kind != "lowrank")


def velocity(state: dict[str, Any], group: dict[str, Any], p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Update the local momentum ``state["momentum_buffer"]`` of ``p`` with gradient ``g`` as
    ``torch.optim.SGD`` does (weight decay, dampening, maximize from ``group``; the first step
    copies ``d``); return what this step sends, a new contiguous tensor: ``u`` (Nesterov: ``d + m u``),
    or ``d`` when ``group["momentum"]`` is 0. Call it under ``torch.no_grad()``."""
    if group.get("maximize", False):
        g = -g
    d = g.add(p, alpha=group["weight_decay"]) if group.get("weight_decay", 0) else g.clone()
    momentum = group["momentum"]
    if momentum == 0:
        return d.contiguous()
    buffer = state.get("momentum_buffer")
    if buffer is None:
        buffer = state["momentum_buffer"] = d.clone()  # torch.optim.SGD's first step
    else:
        buffer.mul_(momentum).add_(d, alpha=1 - group.get("dampening", 0))
    return (d.add(buffer, alpha=momentum) if group.get("nesterov", False) else buffer.clone()).contiguous()


def mask(state: dict[str, Any], left: Any) -> None:
    """Momentum factor masking (sparse codecs): zero the momentum where the velocity went out,
    i.e. where the error-feedback residual ``left`` (same number of elements) is now 0."""
    buffer = state.get("momentum_buffer")
    if buffer is not None:
        buffer.masked_fill_(torch.as_tensor(left == 0, device=buffer.device).reshape(buffer.shape), 0)


@contextlib.contextmanager
def applied(groups: list[dict[str, Any]]) -> Iterator[None]:
    """Inside, the groups of ``groups`` with ``momentum != 0`` (the corrected ones) have momentum,
    weight decay, Nesterov, dampening and maximize at their neutral values (:data:`APPLIED`), so
    that ``torch.optim.SGD.step`` does ``w -= lr * grad`` there; restored on the way out."""
    saved = []
    for group in groups:
        if group.get("momentum", 0) != 0:
            saved.append((group, {k: group[k] for k in APPLIED if k in group}))
            group.update({k: v for k, v in APPLIED.items() if k in group})
    try:
        yield
    finally:
        for group, settings in saved:
            group.update(settings)


def check_checkpoint(saved: dict[str, Any], size: int, correcting: bool) -> None:
    """Refuse a DistributedOptimizer checkpoint whose per-rank momenta cannot be used here: saved
    with correction on ``saved["world_size"]`` ranks, loaded on ``size`` ranks, or by an optimizer
    that does not correct (``correcting``; its ranks would step apart). The same on every rank."""
    if not saved.get("momentum_correction"):
        return
    if saved.get("world_size") != size:
        raise ArgumentError(f"DistributedOptimizer.load_state_dict: the checkpoint was taken on "
                            f"{saved.get('world_size')} ranks with momentum correction, this job has {size}; "
                            f"momenta are per rank and cannot be redistributed, so restart on "
                            f"{saved.get('world_size')} ranks (or start the optimizer afresh)")
    if not correcting:
        raise ArgumentError("DistributedOptimizer.load_state_dict: the checkpoint holds per-rank momenta (saved "
                            "with momentum correction) and this optimizer has none, so ranks would step apart; "
                            "pass momentum_correction=True (or the same compressor)")
