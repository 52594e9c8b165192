"""The all-reduces the optimizers of this package run, with their traffic counted (see :mod:`.traffic`)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

from ...aggregation import compressed_allreduce
from ...aggregation.choice import choose_path
from ...collectives import allreduce
from ...compression import Compressor, ErrorFeedback
from ...compression.halfprec import Bf16
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


def dense_average(tensors: Sequence[torch.Tensor], comm: Comm,
                  wire: Compressor | None = None) -> tuple[list[torch.Tensor], float]:
    """The mean over ranks of every tensor, in one fused all-reduce; and the bytes this rank sent.

    ``wire``: ``None`` sends the tensors' own dtype (exact); ``get("bf16")`` sends bfloat16 (half
    the bytes of float32; see :func:`warmup_wire`), reduced on the summable path, no error feedback;
    16-bit tensors go exact either way.
    """
    if not tensors:
        return [], 0.0
    flat = torch.cat([t.reshape(-1) for t in tensors])
    array = as_array(flat)
    if wire is None or flat.element_size() <= 2:  # 16-bit gradients: bf16 would not halve them, only round them
        allreduce(array, "avg", comm=comm, out=array)
        sent = dense_sent_bytes(array.nbytes, comm.size)
    else:
        counting = Counting(wire)
        array[...] = compressed_allreduce(array, counting, key="dense", comm=comm, average=True)
        sent = dense_sent_bytes(sum(counting.take().values()), comm.size)
    parts = torch.split(flat, [t.numel() for t in tensors])
    return [part.view_as(t) for part, t in zip(parts, tensors, strict=True)], sent


def warmup_wire(wire: Compressor | None, owner: str) -> Compressor | None:
    """Check an optimizer's ``warmup_compressor``: ``None`` (exact) or ``get("bf16")``.

    bf16 keeps float32's exponent range, so the small gradients Adam's variance is made of (1e-8
    and below) survive; fp16 would flush them to zero (and then mask those elements out for the
    rest of the run) and overflow above 65504. Lossy codecs that drop elements would bias the
    variance. So only bf16 is accepted."""
    if wire is None or type(wire) is Bf16:
        return wire
    raise UnsupportedError(f"{owner}: warmup_compressor={wire!r}; accepted: None (the gradients' own dtype) or "
                           f"mpicoll.compression.get('bf16') (fp16 flushes gradients below 6e-8, which "
                           f"Adam's variance needs, to zero)")


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
