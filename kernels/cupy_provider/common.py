"""What the CuPy families share: compiling a family's CUDA C source, launching its kernels, bit keys."""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import cupy
import numpy as np

from ..hashing import MASK64

#: NVRTC options of every module. ``--fmad=false`` forbids FMA contraction (the quantize kernels
#: also use ``__fmul_rn``/``__fadd_rn``, so parity survives a change here); the others spell out
#: the IEEE defaults: subnormals kept, division and square root correctly rounded.
NVRTC_OPTIONS = ("--fmad=false", "--ftz=false", "--prec-div=true", "--prec-sqrt=true")

PRELUDE = "common.cu"  # compiled in front of every family file
THREADS = 256  # per block; a multiple of 32, as the ballot ranks of select.cu require
_MAX_BLOCKS = 65536  # grid-stride kernels cover any size with at most this many blocks
UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}


@functools.cache
def _module(family: str) -> cupy.RawModule:
    """The module of one family (prelude + family source), defined once per process.

    CuPy compiles it when a kernel is first fetched, once per device, and keeps the binary in
    its on-disk cache; ``#line`` keeps compiler messages pointing at the right file and line.
    """
    sources = importlib.resources.files(__package__.rpartition(".")[0]) / "cuda"  # mpicoll.kernels
    code = "".join(f'#line 1 "{name}"\n{(sources / name).read_text(encoding="utf-8")}\n'
                   for name in (PRELUDE, family))
    return cupy.RawModule(code=code, options=NVRTC_OPTIONS)


@functools.cache
def get_kernel(family: str, name: str) -> cupy.RawKernel:
    """One kernel of a family's module."""
    return _module(family).get_function(name)


def run(kernel: cupy.RawKernel, n: int, *args: Any) -> None:
    """Run a grid-stride kernel over ``n`` items; nothing to run when ``n == 0``."""
    if n > 0:
        blocks = min(-(-n // THREADS), _MAX_BLOCKS)
        kernel((blocks,), (THREADS,), args)


def launch(family: str, name: str, n: int, *args: Any) -> None:
    """Run the grid-stride kernel ``name`` of ``family`` over ``n`` items."""
    run(get_kernel(family, name), n, *args)


def u64(value: int) -> np.uint64:
    """A 64-bit counter base (Python int or numpy.uint64) as the kernels' unsigned long long."""
    return np.uint64(int(value) & MASK64)



def float_keys(x: cupy.ndarray) -> tuple[cupy.ndarray, np.uint64]:
    """Float ``x`` flattened as unsigned words, and the mask that clears the sign: ``|x|`` order."""
    if x.dtype.kind != "f" or x.dtype.itemsize not in UNSIGNED:
        raise TypeError(f"expected float16, float32 or float64 data, got {x.dtype}")
    words = cupy.ascontiguousarray(x).ravel().view(UNSIGNED[x.dtype.itemsize])
    return words, np.uint64((1 << (8 * x.dtype.itemsize - 1)) - 1)
