"""Numba-CUDA provider: ``@cuda.jit`` versions of the reference operations.

Same signatures and bitwise-identical results as :mod:`.reference`; outputs mirror the input's
array type (CuPy in, CuPy out; NumPy in, NumPy out, as under the CUDA simulator). Values are
handled through their IEEE bit patterns wherever bits make the contract exact (ordering by
``|x|``, 16-bit floats, NaN payloads); Numba has no general float16 arithmetic on CUDA.

Selections (top-k, threshold, nonzero, the nonzeros of CSR) share one compaction: each thread
owns a slice of ``_ITEMS`` consecutive elements, a first kernel counts each slice's hits, a prefix
sum (on the array's own device) gives each slice its output offset, and a second kernel writes the
hits of each slice in index order: the output is sorted without a sort and without any
``syncthreads``. Top-k finds the k-th largest key by radix selection, 16 bits at a time, on a
global histogram built with ``cuda.atomic.add`` (runs of equal digits are added at once, so heavy
ties do not serialize on one counter).

FMA contraction: NVVM contracts ``a * b + c`` into one fused multiply-add by default (its ``-fma``
option defaults to 1), and numba-cuda 0.30 passes ``-fma=1`` with ``fastmath=True`` but nothing
with ``fastmath=False``, so contraction is on in every ``@cuda.jit`` kernel (numba-cuda issue #118;
``@cuda.jit`` has no ``fma=`` option). Compiling ``v = a * b`` then ``v + c`` in two statements
still gives ``fma.rn.f32``: separate variables do not help. The products that the reference rounds
before an add therefore go through libdevice's ``__nv_fmul_rn`` / ``__nv_dmul_rn``, which emit
``mul.rn``; an explicit rounding modifier is never fused, by NVVM or ptxas (checked in the PTX).
Default math is otherwise IEEE: no flush to zero, correctly rounded division and square root.

NaN results: a GPU returns one canonical NaN from any arithmetic that makes a NaN, while NumPy on
x86-64 propagates a NaN operand's payload (quieted) and makes the negative "default NaN" for
invalid operations (``inf - inf``, ``0 * inf``). Where an output can hold an arithmetic NaN (scales,
dequantize, sign_unpack, scatter_add) the kernels write the x86 bits explicitly.

Under the simulator (``NUMBA_ENABLE_CUDASIM=1``) every CUDA thread is a Python thread: the grid is
capped at two blocks there (grid-stride loops cover any size), and libdevice calls are replaced by
NumPy scalar operations, which never fuse.
"""

from __future__ import annotations

import functools
import math
import operator
import warnings
from typing import Any

from . import threads as _threads  # noqa: F401 - Numba's thread settings must precede its first import

# isort: split
import numba
import numpy as np
from numba import cuda
from numba.cuda import libdevice

from . import reference
from .hashing import GOLDEN, MUL1, MUL2

Array = Any  # a NumPy or CuPy array (anything with __cuda_array_interface__ on a GPU)

_SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
if _SIMULATOR:  # the simulator runs the uint64 hash on NumPy scalars, which warn on the wraparound we want
    warnings.filterwarnings("ignore", message="overflow encountered in scalar", category=RuntimeWarning,
                            module=__name__)
_THREADS = 256
_MAX_BLOCKS = 2 if _SIMULATOR else 4096  # grid-stride loops cover the rest
_ITEMS = 16  # elements per thread slice in the selection kernels
_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_KINDS = {"max": 0, "l2": 1, "mean": 2}

_GOLDEN, _MUL1, _MUL2 = np.uint64(GOLDEN), np.uint64(MUL1), np.uint64(MUL2)
_INV24 = np.float32(1.0 / (1 << 24))
_DIGIT = np.uint16(0xFFFF)
_QUIET32 = np.uint32(0x00400000)  # float32 quiet-NaN bit
_SIGN_OFF32 = np.uint32(0x7FFFFFFF)
_NAN32 = np.uint32(0x7FC00000)  # what NumPy's max reduction returns for a NaN
_DEFAULT_NAN32 = np.uint32(0xFFC00000)  # x86 "real indefinite": 0 * inf, inf - inf
_HALF_QUIET = np.uint16(0x0200)
_HALF_DEFAULT_NAN = np.uint16(0xFE00)
_HALF_TO_FLOAT_BITS = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32).view(np.uint32)

if _SIMULATOR:  # kernels run as Python on NumPy scalars: no libdevice, and nothing is ever fused
    _mul_f32 = _mul_f64 = operator.mul
    _rint_f32, _floor_f32 = np.rint, np.floor
else:
    _mul_f32, _mul_f64 = libdevice.fmul_rn, libdevice.dmul_rn
    _rint_f32, _floor_f32 = libdevice.rintf, libdevice.floorf


# ---------------------------------------------------------------- arrays and launches


def _is_cupy(a: Any) -> bool:
    return type(a).__module__.startswith("cupy")


def _xp(a: Array) -> Any:
    """The array module (numpy or cupy) that owns ``a``; CuPy is imported only for CuPy arrays."""
    if _is_cupy(a):
        import cupy

        return cupy
    return np


def _default_xp() -> Any:
    """For operations without an array input: CuPy on a real GPU when installed, else NumPy."""
    if not _SIMULATOR:
        try:
            import cupy
        except ImportError:
            return np
        return cupy
    return np


def _host(a: Array) -> np.ndarray:
    """A NumPy copy of a (small) array: a device-to-host copy, which waits for the device."""
    return a.get() if _is_cupy(a) else np.asarray(a)


def _writable(out: Array | None, xp: Any, size: int, dtype: Any) -> Array:
    """``out`` itself when a kernel can write into it (same kind, dtype and size, contiguous), else a new array."""
    if (out is not None and _xp(out) is xp and out.dtype == dtype and out.shape == (size,)
            and out.flags.c_contiguous):
        return out
    return xp.empty(size, dtype=dtype)


def _deliver(result: Any, out: Any) -> Any:
    """Like ``reference._into``: ``result``, or ``out`` after copying into what was not written directly."""
    if out is None:
        return result
    pairs = zip(out, result, strict=True) if isinstance(out, tuple) else [(out, result)]
    for target, value in pairs:
        if target is not value:
            target[...] = value
    return out


def _launch(kernel: Any, work: int, *args: Any) -> None:
    """Run ``kernel`` with 256-thread blocks, a grid sized to ``work`` items (capped; the kernels
    loop grid-stride). CuPy arrays go in on CuPy's current stream, without Numba's per-argument
    stream synchronization (the launch is ordered on that same stream)."""
    if work <= 0:
        return
    blocks = min(-(-work // _THREADS), _MAX_BLOCKS)
    if any(_is_cupy(a) for a in args):
        import cupy

        stream = cuda.external_stream(cupy.cuda.get_current_stream().ptr)
        args = tuple(cuda.as_cuda_array(a, sync=False) if _is_cupy(a) else a for a in args)
        kernel[blocks, _THREADS, stream](*args)
    else:
        kernel[blocks, _THREADS](*args)


def _named(fn: Any, name: str) -> Any:
    """``fn`` renamed, so that each kernel made by a factory has its own name in profiles."""
    fn.__name__ = fn.__qualname__ = name
    return fn


# ---------------------------------------------------------------- device helpers


@cuda.jit(device=True)
def _mix64(z):
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


@cuda.jit(device=True)
def _uniform_at(base, i):
    # exact (24 bits times a power of two); mul.rn keeps it out of any contraction all the same
    return _mul_f32(np.float32(_mix64(base + np.uint64(i)) >> np.uint64(40)), _INV24)


@cuda.jit(device=True)
def _f32_bits(f):
    """The IEEE bits of a float32 value (a bit cast through a one-element local array)."""
    tmp = cuda.local.array(1, np.float32)
    tmp[0] = f
    return tmp.view(np.uint32)[0]


@cuda.jit(device=True)
def _half_bits(f):
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


# ---------------------------------------------------------------- random numbers


@cuda.jit
def _uniform_kernel(base, out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = _uniform_at(base, i)


def uniform(base: int, n: int) -> Array:
    """float32 uniforms in [0, 1): element ``i`` is ``uniform24(base + i)``.

    Args:
        base: the 64-bit stream base (``0 <= base < 2**64``).
        n: how many.

    Returns:
        float32 array (CuPy on a GPU when installed, NumPy under the simulator).
    """
    out = _default_xp().empty(n, dtype=np.float32)
    _launch(_uniform_kernel, n, np.uint64(base), out)
    return out


@cuda.jit
def _stratified_kernel(base, n, out):
    k = out.size
    small, extra = n // k, n % k
    for j in range(cuda.grid(1), k, cuda.gridsize(1)):
        size = small + (1 if j < extra else 0)
        start = j * small + min(j, extra)
        out[j] = start + np.int64(_mix64(base + np.uint64(j)) % np.uint64(size))


def stratified_indices(base: int, n: int, k: int) -> Array:
    """``k`` distinct sorted indices in ``[0, n)``, one per stratum, drawn by the counter hash.

    Args:
        base: the 64-bit stream base.
        n: the population size.
        k: how many (``0 <= k <= n``).

    Returns:
        int64 array (CuPy on a GPU when installed, NumPy under the simulator).
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    out = _default_xp().empty(k, dtype=np.int64)
    _launch(_stratified_kernel, k, np.uint64(base), np.int64(n), out)
    return out


# ---------------------------------------------------------------- selection


@cuda.jit
def _radix_histogram_kernel(keys, mask, shift, high, prefix, hist):
    """Counts of the 16-bit digit at ``shift`` of the masked keys whose bits above that digit
    (``high``) equal ``prefix``; a run of equal digits within a slice is one atomic add."""
    n = keys.size
    for s in range(cuda.grid(1), (n + _ITEMS - 1) // _ITEMS, cuda.gridsize(1)):
        digit = -1
        run = 0
        for i in range(s * _ITEMS, min(n, (s + 1) * _ITEMS)):
            key = keys[i] & mask
            if (key & high) == prefix:
                d = np.int64((key >> shift) & _DIGIT)
                if d != digit:
                    if run > 0:
                        cuda.atomic.add(hist, digit, run)
                    digit = d
                    run = 0
                run += 1
        if run > 0:
            cuda.atomic.add(hist, digit, run)


@cuda.jit
def _select_count_kernel(keys, mask, lo, tie, above, ties):
    """Per slice: how many masked keys are ``>= lo``, and how many of the others equal ``tie``."""
    n = keys.size
    for s in range(cuda.grid(1), above.size, cuda.gridsize(1)):
        a = 0
        t = 0
        for i in range(s * _ITEMS, min(n, (s + 1) * _ITEMS)):
            key = keys[i] & mask
            if key >= lo:
                a += 1
            elif key == tie:
                t += 1
        above[s] = a
        ties[s] = t


@cuda.jit
def _select_write_kernel(keys, mask, lo, tie, offsets, take, out):
    """Per slice, in index order from its offset: the keys ``>= lo`` and its first ``take`` ties."""
    n = keys.size
    for s in range(cuda.grid(1), offsets.size, cuda.gridsize(1)):
        pos = offsets[s]
        quota = take[s]
        for i in range(s * _ITEMS, min(n, (s + 1) * _ITEMS)):
            key = keys[i] & mask
            hit = key >= lo
            if not hit and key == tie and quota > 0:
                quota -= 1
                hit = True
            if hit:
                out[pos] = i
                pos += 1


def _keys(x: Array) -> tuple[Array, int]:
    """Unsigned views of a float array's bits, and the mask that clears the sign (keys order like |x|)."""
    if x.dtype.kind != "f":
        raise TypeError(f"selection needs a floating-point array, got {x.dtype}")
    size = x.dtype.itemsize
    keys = _xp(x).ascontiguousarray(x).reshape(-1).view(_UNSIGNED[size])
    return keys, (1 << (8 * size - 1)) - 1


def _select(keys: Array, mask: int, lo: int, tie: int, quota: int) -> Array:
    """Sorted int64 indices of the masked keys ``>= lo``, plus the first ``quota`` equal to ``tie``."""
    xp, utype = _xp(keys), keys.dtype.type
    slices = -(-keys.size // _ITEMS)
    if slices == 0:
        return xp.empty(0, dtype=np.int64)
    bounds = (utype(mask), utype(lo), utype(tie))
    above, ties = xp.empty(slices, dtype=np.int32), xp.empty(slices, dtype=np.int32)
    _launch(_select_count_kernel, slices, keys, *bounds, above, ties)
    ties = ties.astype(np.int64)
    take = xp.clip(quota - (xp.cumsum(ties) - ties), 0, ties)  # the first `quota` ties in index order
    chosen = above + take
    ends = xp.cumsum(chosen)
    total = int(_host(ends[-1:])[0])  # synchronize!
    out = xp.empty(total, dtype=np.int64)
    if total:
        _launch(_select_write_kernel, slices, keys, *bounds, ends - chosen, take, out)
    return out


def _radix_select(keys: Array, mask: int, k: int) -> tuple[int, int, int]:
    """``(lo, tie, quota)`` for :func:`_select` to pick the ``k`` largest masked keys (ties to the
    lower index): radix selection of the k-th largest key, 16 bits at a time, highest digit first."""
    xp, utype = _xp(keys), keys.dtype.type
    bits = 8 * keys.dtype.itemsize
    rank, prefix = k, 0  # we want the rank-th largest of the keys that start with prefix
    for shift in range(bits - 16, -1, -16):
        high = ((1 << bits) - 1) & ~((1 << (shift + 16)) - 1)
        hist = xp.zeros(1 << 16, dtype=np.int64)
        _launch(_radix_histogram_kernel, -(-keys.size // _ITEMS), keys, utype(mask), utype(shift), utype(high),
                utype(prefix), hist)
        counts = _host(hist)  # synchronize!
        at_least = np.cumsum(counts[::-1])  # at_least[j]: keys whose digit is >= 65535 - j
        j = int(np.searchsorted(at_least, rank))
        rank -= int(at_least[j - 1]) if j else 0
        digit = 0xFFFF - j
        prefix |= digit << shift
        if int(counts[digit]) == rank:  # the whole bucket is taken: every key >= its smallest one
            return prefix, prefix, 0
    return prefix + 1, prefix, rank


def topk(x: Array, k: int) -> Array:
    """Indices of the ``k`` largest ``|x|``, sorted; among equal magnitudes the lower index wins.

    Args:
        x: 1-D float16/32/64 array; NaN ranks above inf.
        k: how many (``0 <= k <= x.size``).

    Returns:
        int64 indices, ascending, of ``x``'s array type.
    """
    n = x.size
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    keys, mask = _keys(x)
    if k == 0:
        return _xp(x).empty(0, dtype=np.int64)
    lo, tie, quota = _radix_select(keys, mask, k)
    return _select(keys, mask, lo, tie, quota)


def threshold(x: Array, tau: float) -> Array:
    """Indices with ``|x| >= tau`` (``tau`` rounded to ``x``'s dtype; NaN counts as largest), sorted.

    Args:
        x: 1-D float16/32/64 array.
        tau: the threshold.

    Returns:
        int64 indices, ascending, of ``x``'s array type.
    """
    keys, mask = _keys(x)
    tau_key = int(reference.abs_key(np.array([tau], dtype=x.dtype))[0])
    return _select(keys, mask, tau_key, 0, 0)


def nonzero(x: Array) -> Array:
    """Indices of elements that are not zero (NaN included, -0.0 excluded), sorted.

    Args:
        x: 1-D float16/32/64 array.

    Returns:
        int64 indices, ascending, of ``x``'s array type.
    """
    keys, mask = _keys(x)
    return _select(keys, mask, 1, 0, 0)


# ---------------------------------------------------------------- scatter-add


@functools.cache
def _scatter_add_float_kernel(dtype_name: str) -> Any:
    """The float32/float64 kernel: IEEE add, NaN results with NumPy's x86 bits (a NaN operand's
    payload, quieted, the dense one first; the default NaN for inf - inf)."""
    dtype = np.dtype(dtype_name)
    utype = _UNSIGNED[dtype.itemsize]
    quiet = utype(1 << (np.finfo(dtype).nmant - 1))
    default_nan = utype(((1 << (8 * dtype.itemsize)) - 1) ^ (quiet - utype(1)))

    def kernel(dense, idx, vals):
        dense_bits, val_bits = dense.view(utype), vals.view(utype)
        for j in range(cuda.grid(1), idx.size, cuda.gridsize(1)):
            i = idx[j]
            if i < 0:
                i += dense.size
            a, b = dense[i], vals[j]
            if a != a:
                dense_bits[i] = dense_bits[i] | quiet
            elif b != b:
                dense_bits[i] = val_bits[j] | quiet
            else:
                r = a + b
                if r != r:
                    dense_bits[i] = default_nan
                else:
                    dense[i] = r

    return cuda.jit(_named(kernel, f"_scatter_add_{dtype_name}_kernel"))


@cuda.jit
def _scatter_add_half_kernel(dense, idx, vals, table):
    """float16 on bits, as NumPy does it: both halves to float32 (exact), add, round back to half.
    A NaN operand comes back quieted (the added one first, as NumPy's half loop does)."""
    for j in range(cuda.grid(1), idx.size, cuda.gridsize(1)):
        i = idx[j]
        if i < 0:
            i += dense.size
        a, b = dense[i], vals[j]
        if (b & np.uint16(0x7FFF)) > np.uint16(0x7C00):
            dense[i] = b | _HALF_QUIET
        elif (a & np.uint16(0x7FFF)) > np.uint16(0x7C00):
            dense[i] = a | _HALF_QUIET
        else:
            r = table[a] + table[b]
            if r != r:
                dense[i] = _HALF_DEFAULT_NAN
            else:
                dense[i] = _half_bits(_f32_bits(r))


@cuda.jit
def _scatter_add_plain_kernel(dense, idx, vals):
    for j in range(cuda.grid(1), idx.size, cuda.gridsize(1)):
        i = idx[j]
        if i < 0:
            i += dense.size
        dense[i] += vals[j]


def scatter_add(dense: Array, idx: Array, vals: Array) -> None:
    """``dense[idx] += vals`` in place; ``idx`` must not repeat within one call.

    Args:
        dense: contiguous 1-D array, updated in place.
        idx: integer indices into ``dense``.
        vals: values, cast to ``dense.dtype`` first (by the array library, as the reference does).
    """
    if not dense.flags.c_contiguous:
        raise ValueError("scatter_add needs a contiguous dense array (it is updated in place)")
    xp = _xp(dense)
    idx = xp.ascontiguousarray(idx, dtype=np.int64).reshape(-1)
    vals = xp.ascontiguousarray(vals.astype(dense.dtype, copy=False)).reshape(-1)
    flat = dense.reshape(-1)
    if dense.dtype == np.float16:
        table = _half_table(xp).view(np.float32)
        _launch(_scatter_add_half_kernel, idx.size, flat.view(np.uint16), idx, vals.view(np.uint16), table)
    elif dense.dtype in (np.float32, np.float64):
        _launch(_scatter_add_float_kernel(dense.dtype.name), idx.size, flat, idx, vals)
    else:
        _launch(_scatter_add_plain_kernel, idx.size, flat, idx, vals)


# ---------------------------------------------------------------- quantization


@cuda.jit
def _scale_partials_kernel(x, block, chunk, per_block, kind, partial, nan_bits):
    """One thread per (block, chunk) task: max |x| (kind 0), or the reference's ordered sum of squares
    (1) or of |x| (2) in float64 (element i of the chunk into lane i % 8, each lane in index order,
    then the lanes in order); or the bits of the task's first NaN, quieted."""
    bits = x.view(np.uint32)
    n = x.size
    lanes = cuda.local.array(8, numba.float64)
    for t in range(cuda.grid(1), partial.size, cuda.gridsize(1)):
        b = t // per_block
        lo = b * block + (t - b * per_block) * chunk
        hi = min(lo + chunk, min((b + 1) * block, n))
        acc = 0.0
        for k in range(8):
            lanes[k] = 0.0
        first_nan = np.uint32(0)
        for i in range(lo, hi):
            v = x[i]
            if v != v:
                first_nan = bits[i] | _QUIET32
                break
            d = np.float64(v)
            if kind == 0:
                acc = max(acc, abs(d))
            elif kind == 1:
                lanes[(i - lo) & 7] += _mul_f64(d, d)  # exact anyway (a float32 squared fits a float64)
            else:
                lanes[(i - lo) & 7] += abs(d)
        if kind != 0:
            for k in range(8):
                acc += lanes[k]
        partial[t] = acc
        nan_bits[t] = first_nan


@cuda.jit
def _scale_finish_kernel(partial, nan_bits, block, per_block, n, kind, qmax, out):
    """One thread per block: its task results in order (the reference's two-level order), then
    ``norm / qmax`` in float32; a NaN norm gets the bits NumPy gives it on x86."""
    out_bits = out.view(np.uint32)
    for b in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        acc = 0.0
        nan = np.uint32(0)
        for t in range(b * per_block, (b + 1) * per_block):
            if nan_bits[t] != np.uint32(0):
                nan = nan_bits[t]
                break
            if kind == 0:
                acc = max(acc, partial[t])
            else:
                acc += partial[t]
        if nan != np.uint32(0):
            if kind == 0:
                out_bits[b] = _NAN32
            elif kind == 1:
                out_bits[b] = nan  # squaring keeps the sign of a NaN
            else:
                out_bits[b] = nan & _SIGN_OFF32
        elif kind == 0:
            out[b] = np.float32(acc) / qmax
        elif kind == 1:
            out[b] = np.float32(math.sqrt(acc)) / qmax
        else:
            out[b] = np.float32(acc / (min((b + 1) * block, n) - b * block)) / qmax


def _block_scales(x: Array, block: int, kind: int, qmax: float, out: Array) -> None:
    """Per-block scales into ``out``: partial results per (block, chunk of ``REDUCE_CHUNK``), then
    per block. One thread per task keeps each float64 sum sequential, in index order."""
    if out.size == 0:
        return
    chunk = int(reference.REDUCE_CHUNK)  # read per call, so the contract has one source
    per_block = -(-block // chunk)
    xp = _xp(x)
    partial = xp.empty(out.size * per_block, dtype=np.float64)
    nan_bits = xp.empty(out.size * per_block, dtype=np.uint32)
    _launch(_scale_partials_kernel, partial.size, x, np.int64(block), np.int64(chunk), np.int64(per_block),
            np.int64(kind), partial, nan_bits)
    _launch(_scale_finish_kernel, out.size, partial, nan_bits, np.int64(block), np.int64(per_block),
            np.int64(x.size), np.int64(kind), np.float32(qmax), out)


@cuda.jit(device=True)
def _code(xi, s, q, stochastic, base, i):
    """One code: ``rint(x * inv)`` or ``floor(x * inv + u_i)``, clipped to [-q, q], NaN -> 0."""
    inv = np.float32(1) / s if s > np.float32(0) else np.float32(0)
    v = _mul_f32(xi, inv)  # rounded on its own, as the reference does: never fused with the add
    if stochastic:
        c = _floor_f32(v + _uniform_at(base, i))
    else:
        c = _rint_f32(v)
    if c != c:
        return np.int32(0)
    return np.int32(min(max(c, -q), q))


@cuda.jit
def _quantize_kernel(x, scales, bits, block, q, stochastic, base, out):
    n = x.size
    per_byte = 8 // bits
    low_bits = (1 << bits) - 1
    for j in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        byte = 0
        for t in range(per_byte):
            i = j * per_byte + t
            if i < n:
                code = _code(x[i], scales[i // block], q, stochastic, base, i)
                byte |= (np.int64(code) & low_bits) << (t * bits)
        out[j] = byte


def _check_bits(bits: int) -> None:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")


def _scale_kind(scale_kind: str) -> int:
    if scale_kind not in _KINDS:
        raise ValueError(f"unknown scale kind {scale_kind!r}")
    return _KINDS[scale_kind]


def quantize(x: Array, bits: int, block: int, scale_kind: str, qmax: int, stochastic: bool, base: int,
             out: tuple[Array, Array] | None = None) -> tuple[Array, Array]:
    """Symmetric per-block quantization to ``bits``-bit signed codes, packed (see the reference).

    Args:
        x: 1-D array, converted to float32.
        bits: 8 (one code per byte) or 4 (two per byte, even element in the low nibble).
        block: elements per scale.
        scale_kind: ``"max"``, ``"l2"`` or ``"mean"``.
        qmax: the largest code magnitude.
        stochastic: ``floor(v + u)`` with the counter hash instead of round-half-even.
        base: the 64-bit stream base of the uniforms.
        out: optional ``(packed, scales)`` to write into.

    Returns:
        ``(packed codes, scales)``: ``ceil(n * bits / 8)`` uint8 and ``ceil(n / block)`` float32.
    """
    _check_bits(bits)
    kind = _scale_kind(scale_kind)
    xp = _xp(x)
    x = xp.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    packed = _writable(out and out[0], xp, (x.size * bits + 7) // 8, np.uint8)
    scales = _writable(out and out[1], xp, -(-x.size // block), np.float32)
    _block_scales(x, block, kind, qmax, scales)
    _launch(_quantize_kernel, packed.size, x, scales, np.int64(bits), np.int64(block), np.float32(qmax),
            bool(stochastic), np.uint64(base), packed)
    return _deliver((packed, scales), out)


@cuda.jit
def _dequantize_kernel(packed, scales, bits, block, out):
    scale_bits = scales.view(np.uint32)
    out_bits = out.view(np.uint32)
    per_byte = 8 // bits
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        c = (np.int64(packed[i // per_byte]) >> ((i % per_byte) * bits)) & ((1 << bits) - 1)
        if c >= 1 << (bits - 1):
            c -= 1 << bits
        b = i // block
        s = scales[b]
        if s != s:  # x86 keeps the NaN operand (quieted); a GPU would make its canonical NaN
            out_bits[i] = scale_bits[b] | _QUIET32
        elif c == 0 and math.isinf(s):  # 0 * inf: x86's default NaN
            out_bits[i] = _DEFAULT_NAN32
        else:
            out[i] = np.float32(c) * s


def dequantize(packed: Array, scales: Array, n: int, bits: int, block: int, out: Array | None = None) -> Array:
    """``code_i * scale_b`` in float32: the inverse of :func:`quantize` up to rounding.

    Args:
        packed: uint8 codes as :func:`quantize` packs them.
        scales: float32 per-block scales.
        n: number of elements.
        bits: 4 or 8.
        block: elements per scale.
        out: optional float32 array to write into.

    Returns:
        ``n`` float32 values (``out`` when given).
    """
    _check_bits(bits)
    xp = _xp(packed)
    result = _writable(out, xp, n, np.float32)
    _launch(_dequantize_kernel, n, xp.ascontiguousarray(packed).reshape(-1),
            xp.ascontiguousarray(scales, dtype=np.float32).reshape(-1), np.int64(bits), np.int64(block), result)
    return _deliver(result, out)


# ---------------------------------------------------------------- 1-bit sign


@cuda.jit
def _sign_bits_kernel(x, out):
    n = x.size
    for j in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        byte = 0
        for t in range(8):
            i = 8 * j + t
            if i < n and x[i] < np.float32(0):
                byte |= 1 << t
        out[j] = byte


def sign_pack(x: Array, block: int, out: tuple[Array, Array] | None = None) -> tuple[Array, Array]:
    """1 bit per element (1 where ``x < 0``; element ``8j+t`` is bit ``t`` of byte ``j``), and
    per-block scales ``mean |x|``.

    Args:
        x: 1-D array, converted to float32.
        block: elements per scale.
        out: optional ``(packed, scales)`` to write into.

    Returns:
        ``(packed bits, scales)``: ``ceil(n / 8)`` uint8 and ``ceil(n / block)`` float32.
    """
    xp = _xp(x)
    x = xp.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    packed = _writable(out and out[0], xp, (x.size + 7) // 8, np.uint8)
    scales = _writable(out and out[1], xp, -(-x.size // block), np.float32)
    _block_scales(x, block, _KINDS["mean"], 1.0, scales)
    _launch(_sign_bits_kernel, packed.size, x, packed)
    return _deliver((packed, scales), out)


@cuda.jit
def _sign_unpack_kernel(packed, scales, block, out):
    scale_bits = scales.view(np.uint32)
    out_bits = out.view(np.uint32)
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        b = i // block
        s = scales[b]
        if s != s:  # +-1 * NaN on x86: the NaN, quieted, sign untouched
            out_bits[i] = scale_bits[b] | _QUIET32
        elif (packed[i >> 3] >> (i & 7)) & 1:
            out[i] = np.float32(-1) * s
        else:
            out[i] = np.float32(1) * s


def sign_unpack(packed: Array, scales: Array, n: int, block: int, out: Array | None = None) -> Array:
    """``(1 - 2 * bit) * scale_b`` in float32.

    Args:
        packed: uint8 sign bits as :func:`sign_pack` packs them.
        scales: float32 per-block scales.
        n: number of elements.
        block: elements per scale.
        out: optional float32 array to write into.

    Returns:
        ``n`` float32 values (``out`` when given).
    """
    xp = _xp(packed)
    result = _writable(out, xp, n, np.float32)
    _launch(_sign_unpack_kernel, n, xp.ascontiguousarray(packed).reshape(-1),
            xp.ascontiguousarray(scales, dtype=np.float32).reshape(-1), np.int64(block), result)
    return _deliver(result, out)


# ---------------------------------------------------------------- 16-bit floats


_tables: dict[Any, Array] = {}


def _half_table(xp: Any) -> Array:
    """The 65536 half -> float32 conversions (as uint32 bits), on ``xp``'s current device, built
    once by NumPy so that the lookups are exactly what the reference computes."""
    if xp is np:
        return _HALF_TO_FLOAT_BITS
    key = xp.cuda.Device().id
    if key not in _tables:
        _tables[key] = xp.asarray(_HALF_TO_FLOAT_BITS)
    return _tables[key]


@cuda.jit
def _fp16_encode_kernel(bits, out):
    for i in range(cuda.grid(1), bits.size, cuda.gridsize(1)):
        out[i] = _half_bits(bits[i])


@cuda.jit
def _lookup_kernel(h, table, out):
    for i in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        out[i] = table[h[i]]


@cuda.jit
def _bf16_encode_kernel(bits, out):
    for i in range(cuda.grid(1), bits.size, cuda.gridsize(1)):
        b = bits[i]
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN: stays a NaN, made quiet
            out[i] = (b >> np.uint32(16)) | np.uint32(0x0040)
        else:  # round to nearest even on the upper half (a carry may reach inf, as it should)
            out[i] = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)


@cuda.jit
def _bf16_decode_kernel(h, out):
    for i in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        out[i] = np.uint32(h[i]) << np.uint32(16)


def _float_bits(x: Array) -> tuple[Any, Array]:
    xp = _xp(x)
    return xp, xp.ascontiguousarray(x, dtype=np.float32).reshape(-1).view(np.uint32)


def fp16_encode(x: Array, out: Array | None = None) -> Array:
    """float32 -> IEEE half bits (round to nearest even; overflow to inf; NaN -> 0x7E00 | sign).

    Args:
        x: 1-D array, converted to float32.
        out: optional uint16 array to write into.

    Returns:
        uint16 bits (``out`` when given).
    """
    xp, bits = _float_bits(x)
    result = _writable(out, xp, bits.size, np.uint16)
    _launch(_fp16_encode_kernel, bits.size, bits, result)
    return _deliver(result, out)


def fp16_decode(h: Array, out: Array | None = None) -> Array:
    """IEEE half bits -> float32 (exact; a table lookup).

    Args:
        h: 1-D uint16 (or float16) array of half bits.
        out: optional float32 array to write into.

    Returns:
        float32 values (``out`` when given).
    """
    xp = _xp(h)
    h = xp.ascontiguousarray(h).reshape(-1).view(np.uint16)
    result = _writable(out, xp, h.size, np.float32)
    _launch(_lookup_kernel, h.size, h, _half_table(xp), result.view(np.uint32))
    return _deliver(result, out)


def bf16_encode(x: Array, out: Array | None = None) -> Array:
    """float32 -> bfloat16 bits: round to nearest even on the upper 16 bits; NaN stays a quiet NaN.

    Args:
        x: 1-D array, converted to float32.
        out: optional uint16 array to write into.

    Returns:
        uint16 bits (``out`` when given).
    """
    xp, bits = _float_bits(x)
    result = _writable(out, xp, bits.size, np.uint16)
    _launch(_bf16_encode_kernel, bits.size, bits, result)
    return _deliver(result, out)


def bf16_decode(h: Array, out: Array | None = None) -> Array:
    """bfloat16 bits -> float32 (exact).

    Args:
        h: 1-D uint16 array of bfloat16 bits.
        out: optional float32 array to write into.

    Returns:
        float32 values (``out`` when given).
    """
    xp = _xp(h)
    h = xp.ascontiguousarray(h).reshape(-1).view(np.uint16)
    result = _writable(out, xp, h.size, np.float32)
    _launch(_bf16_decode_kernel, h.size, h, result.view(np.uint32))
    return _deliver(result, out)


# ---------------------------------------------------------------- CSR


@cuda.jit
def _csr_indptr_kernel(flat, cols, indptr):
    """``indptr[r]``: how many nonzeros lie before row ``r`` (a binary search in the sorted flat indices)."""
    for r in range(cuda.grid(1), indptr.size, cuda.gridsize(1)):
        target = r * cols
        lo, hi = 0, flat.size
        while lo < hi:
            mid = (lo + hi) // 2
            if flat[mid] < target:
                lo = mid + 1
            else:
                hi = mid
        indptr[r] = lo


@cuda.jit
def _csr_gather_kernel(keys, flat, cols, indices, values):
    for p in range(cuda.grid(1), flat.size, cuda.gridsize(1)):
        f = flat[p]
        indices[p] = f % cols
        values[p] = keys[f]


def csr_build(mat: Array) -> tuple[Array, Array, Array]:
    """CSR of a 2-D float array: ``indptr`` (rows+1), column ``indices`` and ``values`` of its
    nonzeros (``!= 0``: NaN included, -0.0 excluded).

    Args:
        mat: 2-D float16/32/64 array.

    Returns:
        ``(indptr, indices, values)``: int64, int64, and ``mat.dtype``.
    """
    xp = _xp(mat)
    rows, cols = mat.shape
    keys, mask = _keys(mat)
    flat = _select(keys, mask, 1, 0, 0)  # sorted flat indices: row-major, which is CSR order
    if flat.size == 0:
        return xp.zeros(rows + 1, dtype=np.int64), xp.empty(0, dtype=np.int64), xp.empty(0, dtype=mat.dtype)
    indptr = xp.empty(rows + 1, dtype=np.int64)
    indices = xp.empty(flat.size, dtype=np.int64)
    values = xp.empty(flat.size, dtype=keys.dtype)
    _launch(_csr_indptr_kernel, rows + 1, flat, np.int64(cols), indptr)
    _launch(_csr_gather_kernel, flat.size, keys, flat, np.int64(cols), indices, values)
    return indptr, indices, values.view(mat.dtype)


@cuda.jit
def _csr_densify_kernel(indptr, indices, values, out):
    for r in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        for p in range(indptr[r], indptr[r + 1]):
            out[r, indices[p]] = values[p]


def csr_densify(indptr: Array, indices: Array, values: Array, shape: tuple[int, int], dtype: Any) -> Array:
    """The dense 2-D array of a CSR triple (one thread per row, entries in order).

    Args:
        indptr: row pointers (rows+1).
        indices: column indices.
        values: the nonzeros, cast to ``dtype``.
        shape: ``(rows, cols)``.
        dtype: the result's dtype.

    Returns:
        2-D array of ``values``' array type.
    """
    dtype = np.dtype(dtype)
    xp = _xp(values)
    utype = _UNSIGNED[dtype.itemsize]
    out = xp.zeros(tuple(shape), dtype=utype)
    if indices.size:
        bits = xp.ascontiguousarray(values.astype(dtype, copy=False)).reshape(-1).view(utype)
        _launch(_csr_densify_kernel, out.shape[0], xp.ascontiguousarray(indptr, dtype=np.int64).reshape(-1),
                xp.ascontiguousarray(indices, dtype=np.int64).reshape(-1), bits, out)
    return out.view(dtype)


# ---------------------------------------------------------------- low rank (PowerSGD)


@cuda.jit
def _lowrank_kernel(p, q, size, out):
    r = p.shape[1]
    m = q.shape[0]
    for idx in range(cuda.grid(1), size, cuda.gridsize(1)):
        i = idx // m
        j = idx - i * m
        acc = np.float32(0.0)
        if r > 0:
            acc = _mul_f32(p[i, 0], q[j, 0])
        for k in range(1, r):  # each product rounded (mul.rn), then added: never one fused multiply-add
            acc = acc + _mul_f32(p[i, k], q[j, k])
        out[idx] = acc


def lowrank_reconstruct(p: Array, q: Array, size: int, out: Array | None = None) -> Array:
    """See :func:`reference.lowrank_reconstruct`; one thread per output element.

    Args:
        p: ``(n, r)`` float32.
        q: ``(m, r)`` float32.
        size: elements wanted (``<= n * m``).
        out: optional float32 array of ``size`` to write into.

    Returns:
        ``size`` float32 values (``out`` when given).
    """
    reference.lowrank_shape(p, q, size)  # refuses factors that cannot give size elements
    xp = _xp(p)
    result = _writable(out, xp, size, np.float32)
    _launch(_lowrank_kernel, size, xp.ascontiguousarray(p, dtype=np.float32),
            xp.ascontiguousarray(q, dtype=np.float32), np.int64(size), result)
    return _deliver(result, out)


OPS = {
    "uniform": uniform,
    "stratified_indices": stratified_indices,
    "topk": topk,
    "threshold": threshold,
    "nonzero": nonzero,
    "scatter_add": scatter_add,
    "quantize": quantize,
    "dequantize": dequantize,
    "sign_pack": sign_pack,
    "sign_unpack": sign_unpack,
    "fp16_encode": fp16_encode,
    "fp16_decode": fp16_decode,
    "bf16_encode": bf16_encode,
    "bf16_decode": bf16_decode,
    "csr_build": csr_build,
    "csr_densify": csr_densify,
    "lowrank_reconstruct": lowrank_reconstruct,
}
