"""Start every rank from root's model and optimizer state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..collectives import broadcast
from ..errors import ArgumentError, MismatchError, PeerError
from ..transport import as_comm
from .tensors import as_array


def _tensors(params: Any) -> list[tuple[Any, torch.Tensor]]:
    """``(name or None, tensor)`` for a module, a mapping, or an iterable of tensors or of
    ``(name, tensor)`` pairs (a tensor is never taken for a pair, whatever its first dimension)."""
    if isinstance(params, torch.nn.Module):
        return list(params.state_dict().items())
    if isinstance(params, Mapping):
        return list(params.items())
    if isinstance(params, torch.Tensor):
        raise ArgumentError("broadcast_parameters: pass a list of tensors (or a module, a dict, named pairs), "
                            "not a single tensor")
    items: list[tuple[Any, torch.Tensor]] = []
    for item in params:
        if isinstance(item, torch.Tensor):
            items.append((None, item))
        elif isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], torch.Tensor) \
                and not isinstance(item[0], torch.Tensor):
            items.append((item[0], item[1]))
        else:
            raise ArgumentError(f"broadcast_parameters: expected tensors or (name, tensor) pairs, got "
                                f"{type(item).__name__}")
    return items


def _agree(c: Any, items: list[tuple[Any, torch.Tensor]] | None, error: str | None) -> None:
    """Every rank passed valid arguments with the same shapes and dtypes, or every rank raises."""
    signature = None if items is None else [(tuple(t.shape), str(t.dtype)) for _, t in items]
    everyone = c.mpi.allgather((signature, error))
    failed = [(r, e) for r, (_, e) in enumerate(everyone) if e is not None]
    if failed:
        if error is not None:
            raise ArgumentError(error)
        raise PeerError(f"broadcast_parameters: rank {failed[0][0]} refused its arguments: {failed[0][1]}")
    differ = [r for r, (s, _) in enumerate(everyone) if s != everyone[0][0]]
    if differ:
        raise MismatchError(f"broadcast_parameters: ranks {differ} passed other shapes or dtypes (or another "
                            f"number of tensors) than rank 0")


def broadcast_parameters(params: Any, root: int = 0, *, comm: Any = None) -> None:
    """Overwrite, in place, every parameter and buffer with root's values. Collective.

    Args:
        params: a module (its ``state_dict()``: parameters and buffers), a dict of tensors,
            ``named_parameters()`` pairs, or a list of tensors (``list(model.parameters())``, as
            Horovod accepts). Every rank must pass the same shapes and dtypes in the same order.
        root: the rank whose values win.
        comm: as for :func:`mpicoll.broadcast`.

    Raises:
        ArgumentError / PeerError: some rank's ``params`` were not understood (on every rank).
        MismatchError: ranks passed different shapes, dtypes or counts (on every rank).

    Tensors are fused per dtype and travel as bytes (any dtype, bfloat16 too): one broadcast per
    dtype, not one per tensor. One small allgather first checks the arguments on every rank.
    """
    c = as_comm(comm)
    items, error = None, None
    try:
        items = _tensors(params)
    except ArgumentError as exc:
        error = str(exc)
    _agree(c, items, error)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for _, t in items:
        by_dtype.setdefault(t.dtype, []).append(t)
    for dtype in sorted(by_dtype, key=str):  # the same order on every rank
        group = by_dtype[dtype]
        with torch.no_grad():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            array = as_array(flat.view(torch.uint8))
            broadcast(array, root, comm=c, out=array)
            offset = 0
            for t in group:
                t.copy_(flat[offset: offset + t.numel()].view_as(t))
                offset += t.numel()


def broadcast_optimizer_state(optimizer: Any, root: int = 0, *, comm: Any = None) -> None:
    """Load root's ``optimizer.state_dict()`` on every rank (momentum buffers, step counts, learning
    rates...; error-feedback residuals stay per rank). Works with a plain optimizer or a
    :class:`~mpicoll.torch.DistributedOptimizer`. Pickles the state: meant for start-up, not per step."""
    c = as_comm(comm)
    inner = getattr(optimizer, "optimizer", optimizer)
    state = c.mpi.bcast(inner.state_dict() if c.rank == root else None, root=root)
    if c.rank != root:
        inner.load_state_dict(state)
