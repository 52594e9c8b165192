"""Horovod's PyTorch API on mpicoll: ``import mpicoll.horovod.torch as hvd``.

A Horovod training script runs with only its import line changed: ``hvd.init()``, ``hvd.rank()``,
``hvd.allreduce(...)``, ``hvd.DistributedOptimizer(...)``, ``hvd.broadcast_parameters(...)`` and
the rest of the functions below keep Horovod's names, arguments and results; underneath are
mpicoll's collectives on MPI (no Horovod install, no background coordinator). What differs from
Horovod is listed in the README ("Horovod scripts"). The main points: names of collectives are
accepted and ignored (every rank must call collectives in the same order, as with MPI);
``Adasum`` and process sets other than the global one are refused; ``join()`` shadows the
gradient all-reduces of the last :func:`DistributedOptimizer` made, not other collectives; after
``backward()`` the gradients are already averaged (as under DDP).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .. import compression as _codecs
from ..collectives import Handle, iallgather, iallreduce, ibroadcast
from ..errors import ArgumentError, MismatchError, UnsupportedError
from ..torch import DistributedOptimizer as _DistributedOptimizer
from ..torch import broadcast_optimizer_state as _broadcast_optimizer_state
from ..torch import broadcast_parameters as _broadcast_parameters
from ..torch.tensors import as_array
from .basics import (  # noqa: F401  (Horovod's names, re-exported)
    OP_NAMES,
    Adasum,
    Average,
    Max,
    Min,
    Product,
    ReduceOp,
    Sum,
    barrier,
    ccl_built,
    check_process_set,
    comm,
    cross_rank,
    cross_size,
    cuda_built,
    ddl_built,
    global_process_set,
    gloo_built,
    gloo_enabled,
    init,
    is_initialized,
    last_optimizer,
    local_rank,
    local_size,
    mpi_built,
    mpi_enabled,
    mpi_threads_supported,
    nccl_built,
    rank,
    remember_optimizer,
    rocm_built,
    shutdown,
    size,
)


# --- compression ---------------------------------------------------------------------------------------
class Compressor:
    """Horovod's interface: ``compress(tensor) -> (tensor, ctx)``, ``decompress(tensor, ctx)``."""

    @staticmethod
    def compress(tensor: torch.Tensor) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    @staticmethod
    def decompress(tensor: torch.Tensor, ctx: Any) -> torch.Tensor:
        raise NotImplementedError


class NoneCompressor(Compressor):
    """No compression."""

    @staticmethod
    def compress(tensor: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return tensor, None

    @staticmethod
    def decompress(tensor: torch.Tensor, ctx: Any) -> torch.Tensor:
        return tensor


class FP16Compressor(Compressor):
    """Floating-point tensors travel as float16 (mpicoll adds them in float32)."""

    @staticmethod
    def compress(tensor: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return (tensor.to(torch.float16) if tensor.dtype.is_floating_point else tensor), tensor.dtype

    @staticmethod
    def decompress(tensor: torch.Tensor, ctx: Any) -> torch.Tensor:
        return tensor.to(ctx) if ctx.is_floating_point else tensor


class Compression:
    """``Compression.none`` and ``Compression.fp16``, as in Horovod."""

    none = NoneCompressor
    fp16 = FP16Compressor


# --- tensor collectives --------------------------------------------------------------------------------
class _Work:
    """What the ``*_async`` functions return: pass it to :func:`synchronize` or :func:`poll`."""

    def __init__(self, handle: Handle, finish: Callable[[], torch.Tensor]) -> None:
        self.handle, self.finish = handle, finish


def _op(op: Any, average: bool | None) -> str:
    if op is not None and average is not None:
        raise ArgumentError("hvd: pass op or the deprecated average, not both")
    op = (Average if average in (None, True) else Sum) if op is None else op
    if op == Adasum:
        raise UnsupportedError("mpicoll.horovod: Adasum is not supported; use op=hvd.Average")
    if op not in OP_NAMES:
        raise ArgumentError(f"hvd: unknown reduction op {op!r}")
    return OP_NAMES[ReduceOp(op)]


def allreduce_async_(tensor: torch.Tensor, average: bool | None = None, name: str | None = None, op: Any = None,
                     prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                     process_set: Any = global_process_set) -> _Work:
    """Start reducing ``tensor`` in place across ranks (``name`` is ignored); see :func:`allreduce`."""
    check_process_set(process_set)
    rop = _op(op, average)
    with torch.no_grad():
        if prescale_factor != 1.0:
            tensor.mul_(prescale_factor)
        array = as_array(tensor)
        handle = iallreduce(array, rop, comm=comm(), out=array)

    def finish() -> torch.Tensor:
        handle.wait()
        if postscale_factor != 1.0:
            with torch.no_grad():
                tensor.mul_(postscale_factor)
        return tensor
    return _Work(handle, finish)


def allreduce_async(tensor: torch.Tensor, average: bool | None = None, name: str | None = None, op: Any = None,
                    prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                    process_set: Any = global_process_set) -> _Work:
    """Start reducing a copy of ``tensor``; :func:`synchronize` returns the result."""
    return allreduce_async_(tensor.detach().clone(memory_format=torch.contiguous_format), average, name, op,
                            prescale_factor, postscale_factor, process_set)


def allreduce(tensor: torch.Tensor, average: bool | None = None, name: str | None = None,
              compression: type[Compressor] = Compression.none, op: Any = None, prescale_factor: float = 1.0,
              postscale_factor: float = 1.0, process_set: Any = global_process_set) -> torch.Tensor:
    """A new tensor with the reduction (default: the average) of ``tensor`` over all ranks.
    ``compression`` compresses before and decompresses after, as Horovod does."""
    compressed, ctx = compression.compress(tensor)
    reduced = synchronize(allreduce_async(compressed, average, name, op, prescale_factor, postscale_factor,
                                          process_set))
    return compression.decompress(reduced, ctx)


def allreduce_(tensor: torch.Tensor, average: bool | None = None, name: str | None = None, op: Any = None,
               prescale_factor: float = 1.0, postscale_factor: float = 1.0,
               process_set: Any = global_process_set) -> torch.Tensor:
    """:func:`allreduce` in place (``tensor`` must be contiguous)."""
    return synchronize(allreduce_async_(tensor, average, name, op, prescale_factor, postscale_factor, process_set))


def _bytes(tensor: torch.Tensor) -> Any:
    """A flat uint8 view (collectives that only move data take every dtype this way)."""
    return as_array(tensor.reshape(-1).view(torch.uint8))


def allgather_async(tensor: torch.Tensor, name: str | None = None,
                    process_set: Any = global_process_set) -> _Work:
    """Start gathering ``tensor`` from every rank, concatenated along the first dimension (which
    may differ between ranks; the others and the dtype may not). Agrees on the shapes first."""
    check_process_set(process_set)
    c = comm()
    t = tensor.detach().contiguous()
    t = t.reshape(1) if t.dim() == 0 else t
    shapes = c.mpi.allgather((tuple(t.shape), str(t.dtype)))
    if any(s[1:] != shapes[0][0][1:] or d != shapes[0][1] for s, d in shapes):
        raise MismatchError(f"hvd.allgather: ranks passed tensors whose dtypes or shapes past the first dimension "
                            f"differ: {shapes}")
    row_bytes = math.prod(t.shape[1:]) * t.element_size()
    counts = [s[0] * row_bytes for s, _ in shapes]
    out = torch.empty((sum(s[0] for s, _ in shapes), *t.shape[1:]), dtype=t.dtype, device=t.device)
    handle = iallgather(_bytes(t), counts=counts, comm=c, out=_bytes(out))
    return _Work(handle, lambda: (handle.wait(), out)[1])


def allgather(tensor: torch.Tensor, name: str | None = None, process_set: Any = global_process_set) -> torch.Tensor:
    """Every rank's ``tensor``, concatenated along the first dimension."""
    return synchronize(allgather_async(tensor, name, process_set))


def broadcast_async_(tensor: torch.Tensor, root_rank: int, name: str | None = None,
                     process_set: Any = global_process_set) -> _Work:
    """Start overwriting ``tensor`` (contiguous) with ``root_rank``'s, in place."""
    check_process_set(process_set)
    array = _bytes(tensor.detach())
    handle = ibroadcast(array, root_rank, comm=comm(), out=array)
    return _Work(handle, lambda: (handle.wait(), tensor)[1])


def broadcast_async(tensor: torch.Tensor, root_rank: int, name: str | None = None,
                    process_set: Any = global_process_set) -> _Work:
    """Start broadcasting a copy of ``tensor``."""
    return broadcast_async_(tensor.detach().clone(memory_format=torch.contiguous_format), root_rank, name,
                            process_set)


def broadcast(tensor: torch.Tensor, root_rank: int, name: str | None = None,
              process_set: Any = global_process_set) -> torch.Tensor:
    """A new tensor holding ``root_rank``'s ``tensor``."""
    return synchronize(broadcast_async(tensor, root_rank, name, process_set))


def broadcast_(tensor: torch.Tensor, root_rank: int, name: str | None = None,
               process_set: Any = global_process_set) -> torch.Tensor:
    """:func:`broadcast` in place."""
    return synchronize(broadcast_async_(tensor, root_rank, name, process_set))


def synchronize(handle: _Work) -> torch.Tensor:
    """Wait for an ``*_async`` call; its result."""
    return handle.finish()


def poll(handle: _Work) -> bool:
    """Whether an ``*_async`` call has finished (never blocks)."""
    return handle.handle.done


# --- objects, models and optimizers --------------------------------------------------------------------
def broadcast_object(obj: Any, root_rank: int = 0, name: str | None = None,
                     process_set: Any = global_process_set) -> Any:
    """``root_rank``'s ``obj`` (pickled), on every rank."""
    check_process_set(process_set)
    return comm().mpi.bcast(obj, root=root_rank)


def allgather_object(obj: Any, name: str | None = None, process_set: Any = global_process_set) -> list[Any]:
    """Every rank's ``obj`` (pickled), in rank order."""
    check_process_set(process_set)
    return comm().mpi.allgather(obj)


def broadcast_parameters(params: Any, root_rank: int, process_set: Any = global_process_set) -> None:
    """Overwrite ``params`` (``model.state_dict()``, ``named_parameters()``, a list of tensors) with
    ``root_rank``'s, in place."""
    check_process_set(process_set)
    _broadcast_parameters(params, root_rank, comm=comm())


def broadcast_optimizer_state(optimizer: torch.optim.Optimizer, root_rank: int, model: Any = None,
                              process_set: Any = global_process_set) -> None:
    """Load ``root_rank``'s optimizer state (pickled) on every rank."""
    check_process_set(process_set)
    _broadcast_optimizer_state(optimizer, root_rank, comm=comm())


def DistributedOptimizer(optimizer: torch.optim.Optimizer, named_parameters: Any = None,
                         compression: type[Compressor] = Compression.none, backward_passes_per_step: int = 1,
                         op: Any = Average, gradient_predivide_factor: float = 1.0, num_groups: int = 0,
                         groups: Any = None, sparse_as_dense: bool = False,
                         process_set: Any = global_process_set) -> _DistributedOptimizer:
    """Horovod's ``DistributedOptimizer``: a :class:`mpicoll.torch.DistributedOptimizer` (a
    ``torch.optim.Optimizer`` sharing ``optimizer``'s groups and state). ``num_groups``, ``groups``
    and ``sparse_as_dense`` are accepted and change nothing (mpicoll fuses by bucket size)."""
    check_process_set(process_set)
    if op == Adasum:
        raise UnsupportedError("mpicoll.horovod: Adasum is not supported; use op=hvd.Average")
    if op not in (Average, Sum):
        raise ArgumentError(f"hvd.DistributedOptimizer: op must be hvd.Average or hvd.Sum, got {op!r}")
    codecs = {NoneCompressor: lambda: None, FP16Compressor: lambda: _codecs.get("fp16")}
    if compression not in codecs:
        raise UnsupportedError("mpicoll.horovod: DistributedOptimizer takes Compression.none or Compression.fp16; "
                               "for other codecs use mpicoll.torch.DistributedOptimizer(compressor=...)")
    opt = _DistributedOptimizer(optimizer, named_parameters, compressor=codecs[compression](),
                                backward_passes_per_step=backward_passes_per_step, op=OP_NAMES[ReduceOp(op)],
                                gradient_predivide_factor=gradient_predivide_factor, comm=comm())
    remember_optimizer(opt)
    return opt


def join(device: int = -1) -> int:
    """This rank has no more data: take part, with zeros, in the other ranks' gradient all-reduces
    (those of the last :func:`DistributedOptimizer` made) until every rank has joined. Returns the
    rank whose parameters and optimizer state every rank now has (the lowest one that stepped most)."""
    opt = last_optimizer()
    if opt is None:
        barrier()
        return 0
    return opt.shadow()
