"""``DistributedOptimizer``: data-parallel training without DDP, in the manner of Horovod.

Each parameter gets a post-accumulate-grad hook. When a gradient is final (after
``backward_passes_per_step`` backward passes), the hook marks it ready in
:class:`~mpicoll.aggregation.GradientBuckets`; a bucket whose gradients are all ready starts its
non-blocking (compressed) all-reduce at once, while backward goes on through earlier layers.
``step()`` waits for every bucket, which writes the averaged gradients back into ``.grad``, then
steps the wrapped optimizer. Buckets never change, so error-feedback residuals (one per
bucket) stay valid; they are saved in, and restored from, the optimizer's ``state_dict()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..aggregation import GradientBuckets
from ..backend import xp_of
from ..compression import Compressor
from ..errors import ArgumentError
from .tensors import as_array

_STATE_KEY = "mpicoll"


class DistributedOptimizer:
    """Wrap ``optimizer`` so that ``step()`` uses gradients averaged over all ranks.

    Args:
        optimizer: any ``torch.optim.Optimizer`` over (a subset of) ``named_parameters``.
        named_parameters: ``model.named_parameters()``; names key the buckets and must be unique.
        compressor: ``None`` (plain average) or an mpicoll compressor, e.g.
            ``ErrorFeedback(get("topk", ratio=0.01))``.
        backward_passes_per_step: backward passes (micro-batches) whose gradients accumulate
            locally, as in plain PyTorch, before one all-reduce; gradients are their sum, so scale
            the loss by ``1 / backward_passes_per_step`` for a mean.
        bucket_bytes: fusion buffer size (DDP's ``bucket_cap_mb``; default 25 MiB).
        comm, algorithm: as for :func:`mpicoll.allreduce`.
        warmup_steps: steps averaged uncompressed before ``compressor`` is used (dense warm-up,
            see :class:`~mpicoll.aggregation.GradientBuckets`).

    Every other attribute (``param_groups``, ``zero_grad`` ...) is the wrapped optimizer's.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
                 *, compressor: Compressor | None = None, backward_passes_per_step: int = 1,
                 bucket_bytes: int = 25 << 20, comm: Any = None, algorithm: str = "auto",
                 warmup_steps: int = 0) -> None:
        named = [(n, p) for n, p in named_parameters if p.requires_grad]
        if len({n for n, _ in named}) != len(named):
            raise ArgumentError("DistributedOptimizer: parameter names must be unique")
        if backward_passes_per_step < 1:
            raise ArgumentError(f"DistributedOptimizer: backward_passes_per_step={backward_passes_per_step}, "
                                f"must be at least 1")
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [n for n, p in named if id(p) not in in_optimizer]
        if missing:
            raise ArgumentError(f"DistributedOptimizer: parameters {missing[:5]} are not in the optimizer")
        self.optimizer = optimizer
        self.compressor = compressor
        self.backward_passes_per_step = backward_passes_per_step
        self._params = dict(named)
        placeholders = [(n, _placeholder(p)) for n, p in named]  # shapes and dtypes, for the bucket plan
        self.buckets = GradientBuckets(placeholders, bucket_bytes=bucket_bytes, compressor=compressor, comm=comm,
                                       algorithm=algorithm, average=True, key_prefix="optimizer-bucket",
                                       warmup_steps=warmup_steps)
        self._passes = dict.fromkeys(self._params, 0)
        self._started = False
        self._hooks = [p.register_post_accumulate_grad_hook(self._make_hook(n)) for n, p in named]

    def _make_hook(self, name: str) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            self._passes[name] += 1
            if self._passes[name] > self.backward_passes_per_step:
                raise RuntimeError(f"DistributedOptimizer: {self._passes[name]} backward passes reached "
                                   f"{name!r} since the last step(), more than backward_passes_per_step="
                                   f"{self.backward_passes_per_step}; call step() (or synchronize()) in between")
            self._started = True
            if self._passes[name] == self.backward_passes_per_step:
                self.buckets.ready(name, as_array(param.grad))
        return hook

    def synchronize(self) -> None:
        """Finish every bucket's all-reduce; ``.grad`` then holds the averages. Parameters that got no
        gradient this step take part with zeros, and gradients of fewer than
        ``backward_passes_per_step`` passes (a short last accumulation) with what they have, so that
        every rank reduces the same buckets and no rank steps on local gradients alone."""
        if not self._started:
            return
        for name, param in self._params.items():
            if self._passes[name] < self.backward_passes_per_step:
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                self.buckets.ready(name, as_array(param.grad))
        self.buckets.wait()
        self._passes = dict.fromkeys(self._params, 0)
        self._started = False

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Wait for the averaged gradients, then step the wrapped optimizer."""
        self.synchronize()
        return self.optimizer.step(closure) if closure is not None else self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state plus this rank's error-feedback residuals."""
        state = self.optimizer.state_dict()
        if self.compressor is not None:
            state[_STATE_KEY] = self.compressor.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (residuals included)."""
        state = dict(state)
        ours = state.pop(_STATE_KEY, None)
        self.optimizer.load_state_dict(state)
        if ours is not None and self.compressor is not None:
            self.compressor.load_state_dict(ours)

    def remove_hooks(self) -> None:
        """Detach from the parameters (the wrapped optimizer keeps working alone)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


def _placeholder(param: torch.Tensor) -> Any:
    """A zero-memory array with the gradient's shape, dtype and device, for planning the buckets."""
    one = as_array(torch.zeros(1, dtype=param.dtype, device=param.device))
    return xp_of(one).broadcast_to(one[0], tuple(param.shape))
