"""Start every rank from root's model and optimizer state."""

from __future__ import annotations

from typing import Any

import torch

from ..collectives import broadcast
from ..transport import as_comm
from .tensors import as_array


def broadcast_parameters(params: torch.nn.Module | dict[str, torch.Tensor] | Any, root: int = 0, *,
                         comm: Any = None) -> None:
    """Overwrite, in place, every parameter and buffer with root's values.

    Args:
        params: a module (its ``state_dict()``: parameters and buffers), a dict of tensors, or
            ``named_parameters()`` pairs. Every rank must pass the same names, shapes and dtypes.
        root: the rank whose values win.
        comm: as for :func:`mpicoll.broadcast`.

    Tensors are fused per dtype: one broadcast per dtype, not one per tensor.
    """
    if isinstance(params, torch.nn.Module):
        tensors = list(params.state_dict().values())
    elif isinstance(params, dict):
        tensors = list(params.values())
    else:
        tensors = [t for _, t in params]
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for dtype in sorted(by_dtype, key=str):  # the same order on every rank
        group = by_dtype[dtype]
        with torch.no_grad():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            array = as_array(flat)
            broadcast(array, root, comm=comm, out=array)
            offset = 0
            for t in group:
                t.copy_(flat[offset: offset + t.numel()].view_as(t))
                offset += t.numel()


def broadcast_optimizer_state(optimizer: Any, root: int = 0, *, comm: Any = None) -> None:
    """Load root's ``optimizer.state_dict()`` on every rank (momentum buffers, step counts, ...;
    error-feedback residuals stay per rank). Works with a plain optimizer or a
    :class:`~mpicoll.torch.DistributedOptimizer`. Pickles the state: meant for start-up, not per step."""
    c = as_comm(comm)
    inner = getattr(optimizer, "optimizer", optimizer)
    state = c.mpi.bcast(inner.state_dict() if c.rank == root else None, root=root)
    if c.rank != root:
        inner.load_state_dict(state)
