"""The ``out=`` contract of the kernel operations, shared by every provider.

An operation given ``out`` (an array, or a tuple of arrays for two results) returns ``out`` with
the results in it: written in place by the kernel when ``out`` fits (:func:`writable`), copied in
afterwards when it does not (:func:`deliver`), including a host (NumPy) ``out`` for device results.
Array types come from :mod:`mpicoll.backend` (CuPy is never imported here).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..backend import is_cupy, to_host, xp_of


def writable(out: Any, xp: ModuleType, shape: int | tuple[int, ...], dtype: Any) -> Any:
    """``out`` itself when a kernel can write into it (an ``xp`` array of this dtype and shape,
    contiguous), else a new ``xp`` array that :func:`deliver` copies into ``out`` afterwards."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if (out is not None and xp_of(out) is xp and out.dtype == dtype and out.shape == shape
            and out.flags.c_contiguous):
        return out
    return xp.empty(shape, dtype=dtype)


def deliver(result: Any, out: Any) -> Any:
    """``result`` when there is no ``out``; else ``out``, after copying in each result that was not
    written in place (a device result into a host ``out`` waits for the device)."""
    if out is None:
        return result
    pairs = zip(out, result, strict=True) if isinstance(result, tuple) else [(out, result)]
    for target, value in pairs:
        if target is value:
            continue
        if is_cupy(value) and not is_cupy(target):
            target[...] = to_host(value)  # synchronize! a host out= buffer
        else:
            target[...] = value
    return out
