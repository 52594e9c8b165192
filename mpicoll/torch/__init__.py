"""PyTorch adapter: the only part of mpicoll that imports torch.

Two ways to make a training loop distributed, both on mpicoll's collectives and compressors:

- with DDP: :func:`init_process_group` (gloo, from the MPI ranks), then
  ``ddp.register_comm_hook(HookState(compressor), allreduce_hook)``;
- without DDP: wrap the optimizer in :class:`DistributedOptimizer`; gradients are all-reduced in
  buckets during ``backward()`` and ``step()`` waits for them.

:func:`broadcast_parameters` and :func:`broadcast_optimizer_state` make every rank start from
root's state. Tensors cross to mpicoll without copies (NumPy views on the CPU, DLPack on the GPU).

:class:`DGC` and :class:`OneBitAdam` are optimizers that all-reduce compressed velocity / momentum
themselves (see :mod:`mpicoll.torch.optim`).
"""

from .broadcast import broadcast_optimizer_state, broadcast_parameters
from .hook import HookState, allreduce_hook
from .optim import DGC, OneBitAdam
from .optimizer import DistributedOptimizer
from .process_group import init_process_group
from .tensors import as_array

__all__ = [
    "DGC",
    "DistributedOptimizer",
    "HookState",
    "OneBitAdam",
    "allreduce_hook",
    "as_array",
    "broadcast_optimizer_state",
    "broadcast_parameters",
    "init_process_group",
]
