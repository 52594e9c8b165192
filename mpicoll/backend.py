"""Array backends: NumPy on the host, CuPy on the GPU.

Everything above this layer is written against the array module returned by :func:`xp_of`, so
one code path serves both. CuPy is imported only when a CuPy array is actually seen, which keeps
``import mpicoll`` cheap.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np


def is_cupy(array: Any) -> bool:
    """True if ``array`` is a CuPy array. Does not import CuPy (a CuPy array implies it is imported),
    and an object whose type merely claims a ``cupy`` module is not one."""
    if type(array) is np.ndarray:
        return False
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(array, cupy.ndarray)


def xp_of(array: Any) -> ModuleType:
    """The array module (``numpy`` or ``cupy``) that owns ``array``."""
    if is_cupy(array):
        return sys.modules["cupy"]
    return np


def device_of(array: Any) -> str:
    """``"cpu"`` for host arrays, ``"cuda"`` for CuPy arrays."""
    return "cuda" if is_cupy(array) else "cpu"


def is_array(obj: Any) -> bool:
    """True for the array types mpicoll accepts: NumPy and CuPy arrays."""
    return isinstance(obj, np.ndarray) or is_cupy(obj)


def synchronize(array: Any) -> None:
    """Wait until all queued GPU work on the array's device is done (no-op on the host).

    MPI reads and writes buffers directly, outside CUDA stream order, so a GPU buffer must be
    synchronized before MPI touches it.
    """
    if is_cupy(array):
        array.device.synchronize()  # synchronize!


def to_host(array: Any) -> np.ndarray:
    """A host (NumPy) copy of a CuPy array, or the NumPy array itself."""
    if is_cupy(array):
        return array.get()  # synchronize!
    return np.asarray(array)
