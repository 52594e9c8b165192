"""Tensors as mpicoll arrays, without copies: NumPy views of CPU tensors, CuPy views (DLPack) of CUDA ones."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ArgumentError, DtypeError

_SUPPORTED = (torch.float16, torch.float32, torch.float64, torch.int32, torch.int64, torch.uint8, torch.int8,
              torch.bool)


def as_array(tensor: torch.Tensor) -> Any:
    """A NumPy (CPU) or CuPy (CUDA) array sharing ``tensor``'s memory; writes go to the tensor.

    Raises:
        DtypeError: bfloat16 and other dtypes NumPy cannot hold (cast the tensor first).
        ArgumentError: a non-contiguous tensor (use ``.contiguous()``, which copies).
    """
    if tensor.dtype not in _SUPPORTED:
        raise DtypeError(f"mpicoll.torch: tensors of dtype {tensor.dtype} have no NumPy/CuPy view; "
                         f"cast to float32 (or float16) first")
    if not tensor.is_contiguous():
        raise ArgumentError("mpicoll.torch: the tensor is not contiguous; pass tensor.contiguous()")
    tensor = tensor.detach()
    if tensor.is_cuda:
        import cupy

        return cupy.from_dlpack(tensor)
    return tensor.numpy()


def as_tensor(array: Any, like: torch.Tensor) -> torch.Tensor:
    """``array`` as a tensor on ``like``'s device (no copy when it already lives there)."""
    if like.is_cuda:
        return torch.from_dlpack(array)
    return torch.from_numpy(array)
