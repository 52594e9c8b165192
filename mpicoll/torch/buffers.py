"""Tensors of the mpicoll backend as mpicoll working arrays, and the way results get back.

Collectives that only move data see any tensor as its bytes (every dtype, bfloat16, bool and
complex included). Reductions need a dtype mpicoll reduces: float16/32/64 and int32/64 are used
as they are; bfloat16 is carried in float32 and rounded once at the end; bool, int8, uint8 and
int16 are carried in int32, which gives the same bits as reducing them in their own width
(two's-complement sums and products wrap alike; min, max and the bitwise ops are unchanged by
the widening; bools come back as "non-zero"). Any other dtype is refused with a hint.

A tensor that is not contiguous, or not of the working dtype, is copied into a working tensor
first and copied back by :meth:`Buffer.finish`; otherwise the array is a view of the tensor
itself and nothing is copied.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import DtypeError
from .tensors import as_array

_DIRECT = frozenset({torch.float16, torch.float32, torch.float64, torch.int32, torch.int64})
_WIDENED = {torch.bfloat16: torch.float32, torch.bool: torch.int32, torch.int8: torch.int32,
            torch.uint8: torch.int32, torch.int16: torch.int32}


class Buffer:
    """A tensor's working copy (or the tensor itself) and its mpicoll array view.

    Attributes:
        tensor: the caller's tensor.
        work: the tensor mpicoll reads and writes (``tensor`` itself when possible).
        array: a NumPy (CPU) or CuPy (CUDA) view of ``work``.
    """

    __slots__ = ("array", "tensor", "work")

    def __init__(self, tensor: torch.Tensor, work: torch.Tensor, array: Any) -> None:
        self.tensor, self.work, self.array = tensor, work, array

    def finish(self) -> None:
        """Write the result back into the caller's tensor (a no-op for a view)."""
        if self.work is not self.tensor:
            with torch.no_grad():
                self.tensor.copy_(self.work)


def reduction_dtype(dtype: torch.dtype, where: str) -> torch.dtype:
    """The dtype a reduction of ``dtype`` tensors runs in (see the module docstring)."""
    if dtype in _DIRECT:
        return dtype
    wide = _WIDENED.get(dtype)
    if wide is None:
        raise DtypeError(f"{where}: the mpicoll backend cannot reduce tensors of dtype {dtype}; cast them to "
                         f"int64 or float32 first (complex tensors: torch passes their real view for sum)")
    return wide


def _working(tensor: torch.Tensor, dtype: torch.dtype, copy_in: bool) -> torch.Tensor:
    if tensor.dtype == dtype and tensor.is_contiguous():
        return tensor  # used in place (as_array views it without autograd)
    work = torch.empty(tensor.shape, dtype=dtype, device=tensor.device)
    if copy_in:
        work.copy_(tensor.detach())
    return work


def for_reduction(tensor: torch.Tensor, where: str, copy_in: bool = True) -> Buffer:
    """A :class:`Buffer` in the working dtype of a reduction (``copy_in=False`` for pure outputs)."""
    work = _working(tensor, reduction_dtype(tensor.dtype, where), copy_in)
    return Buffer(tensor, work, as_array(work))


def for_bytes(tensor: torch.Tensor, copy_in: bool = True) -> Buffer:
    """A :class:`Buffer` whose array is the tensor's bytes, 1-D ``uint8`` (any dtype)."""
    work = _working(tensor, tensor.dtype, copy_in)
    return Buffer(tensor, work, as_array(bytes_of(work)))


def bytes_of(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's memory as a 1-D ``uint8`` tensor (a view)."""
    flat = tensor.reshape(-1)
    return flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)


def nbytes(tensor: torch.Tensor) -> int:
    """The tensor's size in bytes."""
    return tensor.numel() * tensor.element_size()
