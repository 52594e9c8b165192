"""What the Numba-CUDA families share: launches, array modules, device helpers, constants."""

from __future__ import annotations

import operator
import warnings
from typing import Any

import numba
import numpy as np
from numba import cuda
from numba.cuda import libdevice

from ...backend import is_cupy, xp_of
from ..hashing import GOLDEN, MUL1, MUL2

Array = Any  # a NumPy or CuPy array (anything with __cuda_array_interface__ on a GPU)

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
if SIMULATOR:  # the simulator runs the uint64 hash on NumPy scalars, which warn on the wraparound we want
    warnings.filterwarnings("ignore", message="overflow encountered in scalar", category=RuntimeWarning,
                            module=__package__)  # every family module of this provider
_THREADS = 256
_MAX_BLOCKS = 2 if SIMULATOR else 4096  # grid-stride loops cover the rest
UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}

_GOLDEN, _MUL1, _MUL2 = np.uint64(GOLDEN), np.uint64(MUL1), np.uint64(MUL2)
_INV24 = np.float32(1.0 / (1 << 24))
QUIET32 = np.uint32(0x00400000)  # float32 quiet-NaN bit
HALF_TO_FLOAT_BITS = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32).view(np.uint32)

if SIMULATOR:  # kernels run as Python on NumPy scalars: no libdevice, and nothing is ever fused
    mul_f32 = mul_f64 = operator.mul
    rint_f32, floor_f32 = np.rint, np.floor
else:
    mul_f32, mul_f64 = libdevice.fmul_rn, libdevice.dmul_rn
    rint_f32, floor_f32 = libdevice.rintf, libdevice.floorf


def default_xp() -> Any:
    """For operations without an array input: CuPy on a real GPU when installed, else NumPy."""
    if not SIMULATOR:
        try:
            import cupy
        except ImportError:
            return np
        return cupy
    return np


def launch(kernel: Any, work: int, *args: Any) -> None:
    """Run ``kernel`` with 256-thread blocks, a grid sized to ``work`` items (capped; the kernels
    loop grid-stride). CuPy arrays go in on CuPy's current stream, without Numba's per-argument
    stream synchronization (the launch is ordered on that same stream)."""
    if work <= 0:
        return
    blocks = min(-(-work // _THREADS), _MAX_BLOCKS)
    if any(is_cupy(a) for a in args):
        import cupy

        stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
        args = tuple(cuda.as_cuda_array(a, sync=False) if is_cupy(a) else a for a in args)
        kernel[blocks, _THREADS, stream](*args)
    else:
        kernel[blocks, _THREADS](*args)


def named(fn: Any, name: str) -> Any:
    """``fn`` renamed, so that each kernel made by a factory has its own name in profiles."""
    fn.__name__ = fn.__qualname__ = name
    return fn


# ---------------------------------------------------------------- device helpers


@cuda.jit(device=True)
def lesser(a, b):
    """``min(a, b)`` with Python's rule (``a`` unless ``b < a``). The kernels never call the builtin
    ``min``/``max``: on the H200 image (numba 0.68.0, numba-cuda 0.30.4, Python 3.12) every kernel
    that did failed to compile ("Signature mismatch: 2 argument types given, but function takes 1
    arguments", the one-argument overload for iterables)."""
    return b if b < a else a


@cuda.jit(device=True)
def greater(a, b):
    """``max(a, b)`` with Python's rule (``a`` unless ``b > a``); see :func:`lesser`."""
    return b if b > a else a


@cuda.jit(device=True)
def mix64(z):
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


@cuda.jit(device=True)
def uniform_at(base, i):
    # exact (24 bits times a power of two); mul.rn keeps it out of any contraction all the same
    return mul_f32(np.float32(mix64(base + np.uint64(i)) >> np.uint64(40)), _INV24)


@cuda.jit(device=True)
def f32_bits(f):
    """The IEEE bits of a float32 value (a bit cast through a one-element local array)."""
    tmp = cuda.local.array(1, np.float32)
    tmp[0] = f
    return tmp.view(np.uint32)[0]


@cuda.jit(device=True)
def half_bits(f):
    """float32 bits -> IEEE half bits as uint32: NumPy's rounding (nearest even, overflow to
    inf, subnormals), NaN -> 0x7E00 | sign (the reference's fp16_encode)."""
    sign = (f >> np.uint32(16)) & np.uint32(0x8000)
    f = f & np.uint32(0x7FFFFFFF)
    exp = f & np.uint32(0x7F800000)
    if exp >= np.uint32(0x47800000):  # inf, NaN, or too large for a half
        if f > np.uint32(0x7F800000):
            return sign | np.uint32(0x7E00)
        return sign | np.uint32(0x7C00)
    if exp <= np.uint32(0x38000000):  # a half subnormal, or zero
        if exp < np.uint32(0x33000000):
            return sign
        e = exp >> np.uint32(23)
        sig = (np.uint32(0x00800000) + (f & np.uint32(0x007FFFFF))) >> (np.uint32(113) - e)
        if (sig & np.uint32(0x3FFF)) != np.uint32(0x1000) or (f & np.uint32(0x7FF)) != np.uint32(0):
            sig += np.uint32(0x1000)
        return sign + (sig >> np.uint32(13))
    hexp = (exp - np.uint32(0x38000000)) >> np.uint32(13)
    sig = f & np.uint32(0x007FFFFF)
    if (sig & np.uint32(0x3FFF)) != np.uint32(0x1000):
        sig += np.uint32(0x1000)
    return sign + (sig >> np.uint32(13)) + hexp  # a carry into the exponent is right (up to inf)


def float_keys(x: Array) -> tuple[Array, int]:
    """Unsigned views of a float array's bits, and the mask that clears the sign (keys order like |x|)."""
    if x.dtype.kind != "f":
        raise TypeError(f"selection needs a floating-point array, got {x.dtype}")
    size = x.dtype.itemsize
    keys = xp_of(x).ascontiguousarray(x).reshape(-1).view(UNSIGNED[size])
    return keys, (1 << (8 * size - 1)) - 1


_tables: dict[Any, Array] = {}


def half_table(xp: Any) -> Array:
    """The 65536 half -> float32 conversions (as uint32 bits), on ``xp``'s current device, built
    once by NumPy so that the lookups are exactly what the reference computes."""
    if xp is np:
        return HALF_TO_FLOAT_BITS
    key = xp.cuda.Device().id
    if key not in _tables:
        _tables[key] = xp.asarray(HALF_TO_FLOAT_BITS)
    return _tables[key]

