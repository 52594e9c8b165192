"""``DGC``: momentum SGD that all-reduces compressed velocity (Deep Gradient Compression, Lin et al., 2018).

Per parameter and step, on each rank (``g`` the local gradient, ``m`` the momentum):

1. *local gradient clipping*: with ``clip_norm``, the local gradients are scaled so that their
   global L2 norm is at most ``clip_norm / sqrt(p)`` (the paper's ``N^-1/2`` rule);
2. ``d = g + weight_decay * w``; *momentum correction*: the local momentum ``u = m u + d`` is
   what is compressed, not the gradient (Nesterov: ``d + m u``);
3. the *velocity* ``v = u + residual`` is compressed, all-reduced and averaged, and what was not
   sent stays in the residual (error feedback on the velocity: momentum-corrected error feedback,
   for any codec). Single-pass paths (top-k: ``sparse_allgather``; quantized codecs:
   ``allgather_decode``) make the residual exactly ``v - sent``;
4. *momentum factor masking* (sparse codecs): ``u`` is zeroed where the velocity was sent, so
   stale momentum does not push those coordinates again (dense codecs send every coordinate,
   where masking would erase the momentum altogether: they skip it);
5. ``w -= lr * average``.

Uncompressed (``compressor=get("none")`` or during ``dense_steps``) this is exactly
``torch.optim.SGD(momentum, nesterov, weight_decay)`` on averaged gradients (averaging is linear).

*Sparsity warm-up*: for codecs with a ``ratio`` (top-k), the first ``warmup_steps`` steps use
exponentially decreasing densities ``warmup_density * (ratio / warmup_density) ** (i / stages)``,
``i = 0 .. stages-1`` (defaults: 25%, 6.3%, 1.6%, 0.4%, then 0.1%: the paper's 75% -> 99.9%).
*Dense warm-up* (``dense_steps``, any codec): plain averaged momentum SGD first; compression then
starts with empty residuals. Tensors under ``min_compress_numel`` elements (biases) are averaged
uncompressed in one fused all-reduce, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ...compression import Compressor, get
from ...errors import ArgumentError
from ...transport import as_comm
from . import checkpoint, momentum
from .exchange import compressed_average, dense_average, residual, wrap_compressor
from .steps import run_closure


class DGC(torch.optim.Optimizer):
    """Momentum SGD with compressed, momentum-corrected velocity all-reduce (see the module docstring).

    Args:
        params: parameters or parameter groups, as for ``torch.optim.SGD``; every rank passes the
            same parameters in the same order.
        lr, momentum, nesterov, weight_decay: as for ``torch.optim.SGD`` (per group; LR schedulers
            change ``lr`` as usual).
        compressor: an mpicoll compressor (default ``get("topk", ratio=0.001)``); error feedback is
            added unless it is already an ``ErrorFeedback``. Sparse and quantized codecs (topk,
            sign, int8, int4, qsgd, fp16 ...); not low-rank ones.
        clip_norm: local gradient clipping threshold (global over ranks), or ``None``.
        momentum_masking: zero the momentum where a sparse codec sent the velocity.
        warmup_steps, warmup_density, warmup_stages: the sparsity warm-up (codecs with a ratio).
        dense_steps: steps averaged uncompressed before compression starts.
        min_compress_numel: smaller tensors are averaged uncompressed.
        comm: the communicator (default: mpicoll's default); algorithm: the compressed path
            (``auto``: see :mod:`mpicoll.aggregation.api`).

    ``traffic_bytes`` counts the gradient bytes this rank has sent (:mod:`.traffic`).
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, nesterov: bool = False,
                 weight_decay: float = 0.0, *, compressor: Compressor | None = None, clip_norm: float | None = None,
                 momentum_masking: bool = True, warmup_steps: int = 0, warmup_density: float = 0.25,
                 warmup_stages: int = 4, dense_steps: int = 0, min_compress_numel: int = 1024, comm: Any = None,
                 algorithm: str = "auto") -> None:
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ArgumentError(f"DGC: lr={lr}, momentum={momentum}, weight_decay={weight_decay}; accepted: "
                                f"lr >= 0, 0 <= momentum < 1, weight_decay >= 0")
        if nesterov and momentum == 0:
            raise ArgumentError("DGC: nesterov needs momentum > 0")
        if min(warmup_steps, dense_steps, min_compress_numel) < 0 or warmup_stages < 1 or not 0 < warmup_density <= 1:
            raise ArgumentError(f"DGC: warmup_steps={warmup_steps}, dense_steps={dense_steps}, "
                                f"min_compress_numel={min_compress_numel} must be >= 0, warmup_stages="
                                f"{warmup_stages} >= 1, warmup_density={warmup_density} in (0, 1]")
        if clip_norm is not None and not clip_norm > 0:
            raise ArgumentError(f"DGC: clip_norm={clip_norm}; accepted: a positive number or None")
        super().__init__(params, {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay})
        self.compressor = wrap_compressor(get("topk", ratio=0.001) if compressor is None else compressor, "DGC")
        self._codec = self.compressor.inner.inner
        self._final_ratio = getattr(self._codec, "ratio", None)
        if warmup_steps and self._final_ratio is None:
            raise ArgumentError(f"DGC: warmup_steps={warmup_steps} is a sparsity warm-up and {self._codec.name!r} has "
                                f"no ratio; use dense_steps= for a dense warm-up")
        self.comm = as_comm(comm)
        self.algorithm, self.clip_norm, self.momentum_masking = algorithm, clip_norm, momentum_masking
        self.warmup_steps, self.warmup_density, self.warmup_stages = warmup_steps, warmup_density, warmup_stages
        self.dense_steps, self.min_compress_numel = dense_steps, min_compress_numel
        self.steps = 0
        self.traffic_bytes = 0.0

    def density(self, step: int) -> float | None:
        """The ratio the codec uses at ``step`` (``None`` for codecs without one)."""
        if self._final_ratio is None or step >= self.warmup_steps:
            return self._final_ratio
        stage = min(self.warmup_stages - 1, step * self.warmup_stages // self.warmup_steps)
        start = max(self.warmup_density, self._final_ratio)
        return start * (self._final_ratio / start) ** (stage / self.warmup_stages)

    def _local_gradients(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]  # every rank, every tensor
        if self.clip_norm is not None:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            limit = self.clip_norm / math.sqrt(self.comm.size)
            if float(norm) > limit:
                grads = [g * (limit / (float(norm) + 1e-6)) for g in grads]
        return grads

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step: compute the velocities, all-reduce them (compressed), update the parameters."""
        loss = run_closure(closure)
        entries = [(group, p) for group in self.param_groups for p in group["params"]]
        grads = self._local_gradients([p for _, p in entries])
        sends = [self._velocity(group, p, g) for (group, p), g in zip(entries, grads, strict=True)]
        compress = self.steps >= self.dense_steps and self._codec.name != "none"
        if self._final_ratio is not None:
            self._codec.ratio = self.density(self.steps)
        small = [i for i, s in enumerate(sends) if not compress or s.numel() < self.min_compress_numel]
        averaged, sent = dense_average([sends[i] for i in small], self.comm)
        results: dict[int, torch.Tensor] = dict(zip(small, averaged, strict=True))
        for i, send in enumerate(sends):
            if i in results:
                continue
            results[i], nbytes = compressed_average(send, self.compressor, ("dgc", i), self.comm, self.algorithm)
            sent += nbytes
            self._mask(i, entries[i])
        for i, (group, p) in enumerate(entries):
            p.add_(results[i].to(p.dtype), alpha=-group["lr"])
        self.steps += 1
        self.traffic_bytes += sent
        return loss

    def _velocity(self, group: dict[str, Any], p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Momentum correction: update the local momentum; return what this step sends."""
        return momentum.velocity(self.state[p], group, p, g)

    def _mask(self, index: int, entry: tuple[dict[str, Any], torch.Tensor]) -> None:
        """Momentum factor masking: zero the momentum where the velocity went out (residual now 0)."""
        group, p = entry
        left = residual(self.compressor, ("dgc", index))
        if not self.momentum_masking or self.compressor.kind != "sparse" or left is None or group["momentum"] == 0:
            return
        momentum.mask(self.state[p], left)

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state (momenta) plus step count, world size and this rank's residuals."""
        return checkpoint.attach(super().state_dict(), self, "DGC")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; refuses, on every rank and before anything changes, a checkpoint
        taken at another world size, by another optimizer class, or of another ``CHECKPOINT_FORMAT``."""
        rest, ours = checkpoint.split(state_dict, self, "DGC")
        super().load_state_dict(rest)
        checkpoint.apply(self, ours)
