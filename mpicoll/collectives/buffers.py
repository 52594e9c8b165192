"""Local argument checks and working buffers of the public collectives.

Algorithms only ever see 1-D contiguous arrays in the working dtype (float16 is carried in
float32). This module turns whatever the caller passed (any shape, non-contiguous views, an
``out=`` buffer, ``out is x``) into such arrays, and copies the result back where it belongs.
The caller's input is never modified unless ``out is x``.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from ..backend import device_of, is_array, xp_of
from ..config import config
from ..errors import ArgumentError, DtypeError, NonFiniteError
from ..transport import Comm


def check_array(x: Any, where: str, name: str = "x") -> Any:
    """Accept a NumPy or CuPy array; anything else raises with a hint.

    NumPy subclasses are used as plain arrays (``np.matrix`` would not flatten); masked arrays are
    refused, since their mask would silently be ignored.
    """
    if type(x) is np.ndarray and not x.dtype.hasobject:  # the common case, in two attribute reads
        return x
    if not is_array(x):
        raise ArgumentError(f"{where}: {name} must be a NumPy or CuPy array, got {type(x).__name__}; "
                            f"wrap lists or scalars with numpy.asarray")
    if isinstance(x, np.ma.MaskedArray):
        raise ArgumentError(f"{where}: {name} is a masked array; fill it first (x.filled(0)) so that no "
                            f"masked values are reduced")
    if type(x) is not np.ndarray and isinstance(x, np.ndarray):
        x = x.view(np.ndarray)
    if x.dtype.hasobject:
        raise DtypeError(f"{where}: {name} has dtype object; pass a numeric array")
    return x


def check_finite(x: Any, rank: int, where: str) -> None:
    """With ``config.check_finite``: raise :class:`NonFiniteError` at the first NaN or infinity of ``x``."""
    if not config.get("check_finite") or x.dtype.kind not in "fc":
        return
    xp = xp_of(x)
    bad = xp.flatnonzero(~xp.isfinite(x.reshape(-1)))  # synchronize! (device arrays)
    if bad.size:
        index = int(bad[0])
        value = x.reshape(-1)[index]
        raise NonFiniteError(f"{where}: rank {rank}'s input holds {value} at flat index {index} "
                             f"({int(bad.size)} non-finite values in all); fix the data or the step that made it, "
                             f"or set MPICOLL_CHECK_FINITE=0 to skip this check")


def _same_view(a: Any, b: Any) -> bool:
    """Whether two NumPy arrays are views of the same memory with the same layout."""
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.strides == b.strides and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def check_out(out: Any, shape: tuple[int, ...], dtype: Any, x: Any, where: str, in_place: bool = True) -> Any:
    """Validate a caller's ``out=`` buffer (or allocate one when ``out`` is ``None``).

    ``in_place``: whether ``out is x`` is allowed (not for collectives whose output differs in
    size from their input).
    """
    xp = xp_of(x)
    if out is None:
        return xp.empty(shape, dtype=dtype)
    out = check_array(out, where, "out")
    if out is not x and xp.may_share_memory(out, x):  # bounds overlap: look closer (rare, and dearer)
        if _same_view(out, x):
            out = x  # one array seen through two objects (check_array views subclasses as ndarray): in place
        elif xp.shares_memory(out, x):
            _overlap(where, in_place)
    if out is x and not in_place and xp.may_share_memory(x, x) and xp.shares_memory(x, x):
        _overlap(where, in_place)
    if type(out) is not type(x) and device_of(out) != device_of(x):
        raise ArgumentError(f"{where}: out is on {device_of(out)} but x is on {device_of(x)}")
    if out.dtype != dtype:
        raise DtypeError(f"{where}: out has dtype {out.dtype}, expected {dtype}")
    if tuple(out.shape) != tuple(shape):
        raise ArgumentError(f"{where}: out has shape {tuple(out.shape)}, expected {tuple(shape)}")
    if not getattr(out.flags, "writeable", True):  # found here, not mid-ring where the peers would wait
        raise ArgumentError(f"{where}: {'x (in place)' if out is x else 'out'} is read-only; pass a writeable array")
    return out


def _overlap(where: str, in_place: bool) -> None:
    hint = "pass out=x for in place, or a separate buffer" if in_place else "pass a separate buffer"
    raise ArgumentError(f"{where}: out overlaps x; {hint}")


def check_root(root: Any, comm: Comm, where: str) -> int:
    """A root must be a rank of the communicator (any integer type)."""
    try:
        value = operator.index(root) if not isinstance(root, bool) else None
    except TypeError:
        value = None
    if value is None or not 0 <= value < comm.size:
        raise ArgumentError(f"{where}: root={root!r} is not a rank of this communicator "
                            f"(0 .. {comm.size - 1})")
    return value


def _direct(array: Any, dtype: Any) -> bool:
    return array.dtype == dtype and array.flags.c_contiguous


def flat_input(comm: Comm, x: Any, dtype: Any, slot: str) -> Any:
    """``x`` as a 1-D contiguous array of ``dtype``: a view when possible, else a reused scratch copy."""
    if _direct(x, dtype):
        return x.reshape(-1)
    work = comm.scratch.get(slot, x.size, dtype, xp_of(x))
    work.reshape(x.shape)[...] = x
    return work


def flat_output(comm: Comm, out: Any, dtype: Any, slot: str) -> tuple[Any, bool]:
    """Where an algorithm writes its result, and whether that is ``out`` itself (contiguous, of ``dtype``)."""
    if _direct(out, dtype):
        return out.reshape(-1), True
    return comm.scratch.get(slot, out.size, dtype, xp_of(out)), False


def in_out(comm: Comm, x: Any, out: Any, dtype: Any) -> tuple[Any, Any, bool]:
    """Working input and output, and whether the output is ``out`` itself.

    When the caller asked for in place (``out is x``) and ``x`` can be used directly, input and
    output are the *same object*, which algorithms recognize (``recvbuf is sendbuf``).
    """
    send = flat_input(comm, x, dtype, "api.send")
    if out is x and _direct(x, dtype):
        return send, send, True
    recv, direct = flat_output(comm, out, dtype, "api.recv")
    return send, recv, direct


def finish(work: Any, out: Any, direct: bool) -> Any:
    """Copy (and cast) the algorithm's result into ``out`` unless it was written there directly."""
    if not direct:
        out[...] = work.reshape(out.shape)
    return out
