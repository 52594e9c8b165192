"""What the CuPy families share: compiling a family's CUDA C source, launching its kernels, bit keys."""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import os
import tempfile
from pathlib import Path
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


def family_source(family: str) -> str:
    """The translation unit of one family: the prelude, then the family's file (``#line`` keeps
    compiler messages pointing at the right file and line)."""
    sources = importlib.resources.files(__package__.rpartition(".")[0]) / "cuda"  # mpicoll.kernels
    return "".join(f'#line 1 "{name}"\n{(sources / name).read_text(encoding="utf-8")}\n'
                   for name in (PRELUDE, family))


def arch_option(compute_capability: int, supported: tuple[int, ...]) -> tuple[str, str]:
    """NVRTC's ``-arch`` for a device, and what it makes: machine code (``cubin``) for an
    architecture NVRTC knows, else PTX for the newest one it knows below it (the driver compiles it)."""
    if compute_capability in supported:
        return f"-arch=sm_{compute_capability}", "cubin"
    older = [a for a in supported if a < compute_capability]
    if not older:
        raise RuntimeError(f"NVRTC supports architectures {supported}, none at or below the device's "
                           f"sm_{compute_capability}")
    return f"-arch=compute_{max(older)}", "ptx"


def compile_source(code: str, name: str, arch: str, output: str) -> bytes:
    """Compile CUDA C with NVRTC under exactly :data:`NVRTC_OPTIONS` (and ``arch``).

    CuPy compiling from source (a raw module or kernel given code) appends ``-ftz=true`` after the caller's options
    (``cupy/cuda/compiler.py``), which flushed float32 subnormals to zero: on an H200, negative
    subnormals lost their sign bit in sign_pack and blocks of subnormals got zero scales. So the
    provider compiles with NVRTC itself and hands CuPy the result.
    """
    from cupy.cuda import nvrtc

    program = nvrtc.createProgram(code, name, (), ())
    try:
        nvrtc.compileProgram(program, (*NVRTC_OPTIONS, arch))
        return nvrtc.getCUBIN(program) if output == "cubin" else nvrtc.getPTX(program)
    except nvrtc.NVRTCError as exc:
        raise RuntimeError(f"NVRTC could not compile {name}: {nvrtc.getProgramLog(program)}") from exc
    finally:
        nvrtc.destroyProgram(program)


def _cache_dir() -> Path:
    """Where compiled modules are kept between processes (``$XDG_CACHE_HOME/mpicoll/cuda``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mpicoll" / "cuda"


@functools.cache
def _module(family: str, device: int) -> cupy.RawModule:
    """The module of one family on one device, compiled once per machine and kept on disk (keyed
    by source, options, architecture and NVRTC version; written atomically, so ranks starting
    together may compile it twice but never read half a file). A cached file that does not load
    (truncated, from a broken disk) is compiled again; where the cache cannot be written, the
    module is compiled into a private temporary folder of this process."""
    from cupy.cuda import nvrtc

    code = family_source(family)
    capability = int(cupy.cuda.Device(device).compute_capability)
    try:
        supported = tuple(int(a) for a in nvrtc.getSupportedArchs())
    except (AttributeError, nvrtc.NVRTCError):  # an NVRTC without the query: assume it knows the device
        supported = (capability,)
    arch, output = arch_option(capability, supported)
    key = hashlib.sha256("\0".join([code, *NVRTC_OPTIONS, arch, repr(nvrtc.getVersion())]).encode()).hexdigest()
    name = f"{family.removesuffix('.cu')}-{key[:20]}.{output}"
    try:
        folder = _cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        if not path.exists():
            _write(path, compile_source(code, family, arch, output))
    except OSError:  # no writable cache: a folder only this process can write (never a shared, guessable one)
        path = Path(tempfile.mkdtemp(prefix="mpicoll-cuda-")) / name
        _write(path, compile_source(code, family, arch, output))
    with cupy.cuda.Device(device):
        try:
            return cupy.RawModule(path=str(path))
        except Exception:  # an unreadable cached file: compile it again, once
            _write(path, compile_source(code, family, arch, output))
            return cupy.RawModule(path=str(path))


def _write(path: Path, binary: bytes) -> None:
    """``binary`` into ``path`` atomically (a temporary file beside it, then a rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(binary)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def get_kernel(family: str, name: str) -> cupy.RawKernel:
    """One kernel of a family's module, on the current device."""
    return _get_kernel(family, name, cupy.cuda.Device().id)


@functools.cache
def _get_kernel(family: str, name: str, device: int) -> cupy.RawKernel:
    return _module(family, device).get_function(name)


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
