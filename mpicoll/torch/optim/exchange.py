"""The all-reduces the optimizers of this package run, with their traffic counted (see :mod:`.traffic`)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

from ...aggregation import compressed_allreduce
from ...aggregation.choice import choose_path
from ...collectives import allreduce
from ...compression import Compressor, ErrorFeedback
from ...errors import UnsupportedError
from ...transport import Comm
from ..tensors import as_array, as_tensor
from .traffic import Counting, compressed_sent_bytes, dense_sent_bytes


def wrap_compressor(compressor: Compressor, owner: str) -> Counting:
    """``compressor`` with error feedback (added unless it has it) and payload counting; refuses
    low-rank codecs, whose path keeps its own factors rather than one residual per key."""
    if not isinstance(compressor, Compressor):
        raise UnsupportedError(f"{owner}: compressor must come from mpicoll.compression.get, got {compressor!r}")
    if compressor.kind == "lowrank":
        raise UnsupportedError(f"{owner}: {compressor.name!r} is low-rank; it needs the gradient's matrix shapes "
                               f"and its own two-step path. Use DistributedOptimizer with "
                               f"ErrorFeedback(get('powersgd')) instead")
    return Counting(compressor if isinstance(compressor, ErrorFeedback) else ErrorFeedback(compressor))


def dense_average(tensors: Sequence[torch.Tensor], comm: Comm) -> tuple[list[torch.Tensor], float]:
    """The mean over ranks of every tensor, in one fused all-reduce; and the bytes this rank sent."""
    if not tensors:
        return [], 0.0
    flat = torch.cat([t.reshape(-1) for t in tensors])
    array = as_array(flat)
    allreduce(array, "avg", comm=comm, out=array)
    parts = torch.split(flat, [t.numel() for t in tensors])
    return [part.view_as(t) for part, t in zip(parts, tensors, strict=True)], dense_sent_bytes(array.nbytes, comm.size)


def compressed_average(tensor: torch.Tensor, compressor: Counting, key: Hashable, comm: Comm,
                       algorithm: str) -> tuple[torch.Tensor, float]:
    """The compressed mean over ranks of ``tensor`` (contiguous); and the bytes this rank sent."""
    array = as_array(tensor)
    path = choose_path(compressor, array, comm) if algorithm == "auto" else algorithm
    compressor.take()
    result = compressed_allreduce(array, compressor, key=key, comm=comm, average=True, algorithm=algorithm)
    sent = compressed_sent_bytes(path, compressor.take(), key, comm.rank, comm.size)
    return as_tensor(result, tensor).reshape(tensor.shape), sent


def residual(compressor: Counting, key: Hashable) -> Any:
    """The error-feedback residual of ``key`` (``None`` when the path keeps it per chunk)."""
    return compressor.inner.residual(key)
