"""PyTorch adapter: the only part of mpicoll that imports torch.

Importing it registers the ``"mpicoll"`` torch.distributed backend (:mod:`.backend`) and the
``mpi://`` rendezvous (:mod:`.rendezvous`), so that under mpiexec or srun
``torch.distributed.init_process_group("mpicoll")`` runs every torch.distributed call, DDP's
included, on mpicoll. Two more ways to make a training loop distributed:

- with DDP: :func:`init_process_group` (the mpicoll backend, or gloo, from the MPI ranks), and
  optionally ``ddp.register_comm_hook(HookState(compressor), allreduce_hook)`` to compress;
- without DDP: wrap the optimizer in :class:`DistributedOptimizer` (a ``torch.optim.Optimizer``);
  gradients are all-reduced in buckets during ``backward()``, averaged when it returns;
  ``with opt.join():`` lets ranks with fewer batches finish.

:func:`broadcast_parameters` and :func:`broadcast_optimizer_state` make every rank start from
root's state. Tensors cross to mpicoll without copies (NumPy views on the CPU, DLPack on the GPU).

:class:`DGC` and :class:`OneBitAdam` are optimizers that all-reduce compressed velocity / momentum
themselves (see :mod:`mpicoll.torch.optim`).
"""

from . import backend as _backend
from . import rendezvous as _rendezvous
from .backend import ProcessGroup
from .broadcast import broadcast_optimizer_state, broadcast_parameters
from .hook import HookState, allreduce_hook
from .join import Join
from .optim import DGC, OneBitAdam, ZeroOneAdam
from .optimizer import DistributedOptimizer
from .process_group import init_process_group
from .tensors import as_array

_backend.register()
_rendezvous.install()

__all__ = [
    "DGC",
    "DistributedOptimizer",
    "HookState",
    "Join",
    "OneBitAdam",
    "ProcessGroup",
    "ZeroOneAdam",
    "allreduce_hook",
    "as_array",
    "broadcast_optimizer_state",
    "broadcast_parameters",
    "init_process_group",
]
