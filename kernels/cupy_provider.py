"""CuPy provider: the reference operations as CUDA C kernels, on CuPy arrays.

Same signatures and bitwise identical results as :mod:`.reference` (the parity tests in
``tests/gpu`` check); inputs and outputs are CuPy arrays, scalars are host values. The kernels
are CUDA C in ``cuda/*.cu`` (package data), one file per family: ``hash`` (counter-hash
randoms), ``select`` (radix selection, order-preserving compaction), ``quantize`` (block scales,
quantize + pack, signs), ``halves`` (fp16, bf16, NumPy-exact casts to float32), ``sparse``
(scatter-add, CSR) and ``lowrank`` (PowerSGD's reconstruction). Each family is compiled by NVRTC
at its first use, with ``cuda/common.cu`` (shared device helpers) in front of it; nothing is
allocated or compiled at import.

How parity is kept: integer work is exact; float arithmetic uses explicitly rounded intrinsics,
compiled without FMA contraction; the float64 sums that feed a scale make the additions of
``reference.ordered_sum`` in its order (lanes, then chunks); and NaN results are rebuilt with
the bits the reference's x86-64 host produces (a GPU would return one canonical NaN).
Selections are sorted by construction: chunks are compacted in index order, never sorted.

Host synchronizations: only where an output size depends on the data (``threshold``,
``nonzero``, ``csr_build``: one count each), and to fill a host (NumPy) ``out=`` buffer; each
is marked ``# synchronize!``.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import cupy
import numpy as np

from . import reference
from .hashing import MASK64

#: NVRTC options of every module. ``--fmad=false`` forbids FMA contraction (the quantize kernels
#: also use ``__fmul_rn``/``__fadd_rn``, so parity survives a change here); the others spell out
#: the IEEE defaults: subnormals kept, division and square root correctly rounded.
NVRTC_OPTIONS = ("--fmad=false", "--ftz=false", "--prec-div=true", "--prec-sqrt=true")

_PRELUDE = "common.cu"  # compiled in front of every family file
_THREADS = 256  # per block; a multiple of 32, as the ballot ranks of select.cu require
_MAX_BLOCKS = 65536  # grid-stride kernels cover any size with at most this many blocks
_CHUNK = 8192  # elements per block in the compaction
_DIGIT_BITS, _DIGITS = 8, 256  # radix digit of select.cu (MPICOLL_DIGIT_BITS, MPICOLL_DIGITS)
_SCALE_KINDS = {"max": 0, "l2": 1, "mean": 2}  # MPICOLL_SCALE_* of quantize.cu
_UNSIGNED = {2: np.uint16, 4: np.uint32, 8: np.uint64}

# Kernels that exist once per word size (select.cu, sparse.cu), by itemsize.
_RADIX_HIST = {2: "mpicoll_radix_hist_u16", 4: "mpicoll_radix_hist_u32", 8: "mpicoll_radix_hist_u64"}
_COMPACT_COUNT = {2: "mpicoll_compact_count_u16", 4: "mpicoll_compact_count_u32", 8: "mpicoll_compact_count_u64"}
_COMPACT_WRITE = {2: "mpicoll_compact_write_u16", 4: "mpicoll_compact_write_u32", 8: "mpicoll_compact_write_u64"}
_CSR_FILL = {2: "mpicoll_csr_fill_u16", 4: "mpicoll_csr_fill_u32", 8: "mpicoll_csr_fill_u64"}
_CSR_DENSIFY = {2: "mpicoll_csr_densify_u16", 4: "mpicoll_csr_densify_u32", 8: "mpicoll_csr_densify_u64"}
_SCATTER_ADD = {2: "mpicoll_scatter_add_f16", 4: "mpicoll_scatter_add_f32", 8: "mpicoll_scatter_add_f64"}


# ---------------------------------------------------------------- compiling and launching


@functools.cache
def _module(family: str) -> cupy.RawModule:
    """The module of one family (prelude + family source), defined once per process.

    CuPy compiles it when a kernel is first fetched, once per device, and keeps the binary in
    its on-disk cache; ``#line`` keeps compiler messages pointing at the right file and line.
    """
    sources = importlib.resources.files(__package__) / "cuda"
    code = "".join(f'#line 1 "{name}"\n{(sources / name).read_text(encoding="utf-8")}\n'
                   for name in (_PRELUDE, family))
    return cupy.RawModule(code=code, options=NVRTC_OPTIONS)


@functools.cache
def _kernel(family: str, name: str) -> cupy.RawKernel:
    """One kernel of a family's module."""
    return _module(family).get_function(name)


def _run(kernel: cupy.RawKernel, n: int, *args: Any) -> None:
    """Run a grid-stride kernel over ``n`` items; nothing to run when ``n == 0``."""
    if n > 0:
        blocks = min(-(-n // _THREADS), _MAX_BLOCKS)
        kernel((blocks,), (_THREADS,), args)


def _launch(family: str, name: str, n: int, *args: Any) -> None:
    """Run the grid-stride kernel ``name`` of ``family`` over ``n`` items."""
    _run(_kernel(family, name), n, *args)


def _u64(value: int) -> np.uint64:
    """A 64-bit counter base (Python int or numpy.uint64) as the kernels' unsigned long long."""
    return np.uint64(int(value) & MASK64)


def _check_block(block: int) -> int:
    if int(block) < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    return int(block)


def _check_bits(bits: int) -> None:
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")


def _need(what: str, array: cupy.ndarray, count: int) -> None:
    """Refuse an input too short for what the kernels will read (they cannot raise)."""
    if array.size < count:
        raise ValueError(f"{what} holds {array.size} elements, {count} are needed")


def _output(out: Any, shape: tuple[int, ...], dtype: Any) -> cupy.ndarray:
    """``out`` itself when a kernel can write into it (a contiguous CuPy array of this dtype and
    shape), else a new array that :func:`_deliver` copies into ``out`` afterwards."""
    if (isinstance(out, cupy.ndarray) and out.dtype == dtype and out.shape == shape
            and out.flags.c_contiguous):
        return out
    return cupy.empty(shape, dtype=dtype)


def _deliver(result: Any, out: Any) -> Any:
    """Like ``reference._into``: ``result``, or ``out`` after copying in what was not written in place."""
    if out is None:
        return result
    pairs = zip(out, result, strict=True) if isinstance(result, tuple) else [(out, result)]
    for target, value in pairs:
        if target is value:
            continue
        if isinstance(target, cupy.ndarray):
            target[...] = value
        else:
            target[...] = cupy.asnumpy(value)  # synchronize! a host out= buffer
    return out


# ---------------------------------------------------------------- conversions


def _as_f32(x: cupy.ndarray) -> cupy.ndarray:
    """``x`` as contiguous float32, converted exactly as NumPy's ``astype(float32)`` (NaN bits too)."""
    x = cupy.ascontiguousarray(x)
    if x.dtype == np.float32:
        return x
    if x.dtype == np.float16:
        return fp16_decode(x)
    if x.dtype == np.float64:
        out = cupy.empty(x.shape, dtype=cupy.float32)
        _launch("halves.cu", "mpicoll_f64_to_f32", x.size, x.view(cupy.uint64), np.int64(x.size), out)
        return out
    return x.astype(cupy.float32)  # integers and booleans: no NaN, and both round to nearest even


def _cast(a: cupy.ndarray, dtype: np.dtype) -> cupy.ndarray:
    """``a`` as contiguous ``dtype``; exact NumPy bits for casts to float32, CuPy's ``astype`` otherwise."""
    a = cupy.ascontiguousarray(a)
    if a.dtype == dtype:
        return a
    return _as_f32(a) if dtype == np.float32 else a.astype(dtype)


def _keys(x: cupy.ndarray) -> tuple[cupy.ndarray, np.uint64]:
    """Float ``x`` flattened as unsigned words, and the mask that clears the sign: ``|x|`` order."""
    if x.dtype.kind != "f" or x.dtype.itemsize not in _UNSIGNED:
        raise TypeError(f"expected float16, float32 or float64 data, got {x.dtype}")
    words = cupy.ascontiguousarray(x).ravel().view(_UNSIGNED[x.dtype.itemsize])
    return words, np.uint64((1 << (8 * x.dtype.itemsize - 1)) - 1)


# ---------------------------------------------------------------- random numbers


def uniform(base: int, n: int) -> cupy.ndarray:
    """float32 uniforms in ``[0, 1)``: element ``i`` is ``hashing.uniform24(base + i)``.

    Args:
        base: the 64-bit counter base (int or numpy.uint64).
        n: how many.
    """
    out = cupy.empty(n, dtype=cupy.float32)
    _launch("hash.cu", "mpicoll_uniform", n, _u64(base), np.int64(n), out)
    return out


def stratified_indices(base: int, n: int, k: int) -> cupy.ndarray:
    """``k`` sorted int64 indices in ``[0, n)``, one per stratum (see :func:`.reference.stratified_indices`).

    Args:
        base: the 64-bit counter base.
        n: the population size.
        k: how many, ``0 <= k <= n``.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    out = cupy.empty(k, dtype=cupy.int64)
    _launch("hash.cu", "mpicoll_stratified_indices", k, _u64(base), np.int64(n), np.int64(k), out)
    return out


# ---------------------------------------------------------------- selection


def _state(pivot: int, quota: int) -> cupy.ndarray:
    """The device state of a selection: [pivot key, ties to keep] (select.cu)."""
    return cupy.asarray(np.array([pivot, quota], dtype=np.uint64))


def _radix_select(keys: cupy.ndarray, mask: np.uint64, state: cupy.ndarray) -> None:
    """Turn ``state = [0, k]`` into [k-th largest masked key, how many keys equal to it the top k keep].

    One histogram and one single-thread pick per 8-bit digit, most significant first; the
    prefix and rank stay on the device, so the passes queue without a host round trip.
    """
    width = 8 * keys.dtype.itemsize
    shifts = range(width - _DIGIT_BITS, -1, -_DIGIT_BITS)
    hist = cupy.zeros((len(shifts), _DIGITS), dtype=cupy.uint64)
    for row, shift in zip(hist, shifts, strict=True):
        _launch("select.cu", _RADIX_HIST[keys.dtype.itemsize], keys.size,
                keys, np.int64(keys.size), mask, state, np.int32(shift), row)
        _kernel("select.cu", "mpicoll_radix_pick")((1,), (1,), (row, state))


def _compact(keys: cupy.ndarray, mask: np.uint64, state: cupy.ndarray, total: int | None = None) -> cupy.ndarray:
    """Sorted int64 indices whose masked key is above ``state[0]``, plus the first ``state[1]`` equal to it.

    Args:
        keys, mask: from :func:`_keys`.
        state: the device [pivot, ties to keep].
        total: the output size if the caller knows it; otherwise it is read back (one sync).
    """
    n, size = keys.size, keys.dtype.itemsize
    if n == 0:
        return cupy.empty(0, dtype=cupy.int64)
    nchunks = -(-n // _CHUNK)
    above = cupy.empty(nchunks, dtype=cupy.int64)
    ties = cupy.empty(nchunks, dtype=cupy.int64)
    args = (keys, np.int64(n), mask, state, np.int64(_CHUNK))
    _kernel("select.cu", _COMPACT_COUNT[size])((nchunks,), (_THREADS,), (*args, above, ties))
    # Integer prefix sums, exact in any order: the ties each chunk keeps (the lowest indices
    # first), then where each chunk starts writing.
    tie_start = cupy.cumsum(ties) - ties
    quota = cupy.minimum(cupy.maximum(state[1:].view(cupy.int64) - tie_start, 0), ties)
    kept = above + quota
    ends = cupy.cumsum(kept)
    if total is None:
        total = int(ends[-1])  # synchronize! the output size is data-dependent
    out = cupy.empty(total, dtype=cupy.int64)
    if total:
        _kernel("select.cu", _COMPACT_WRITE[size])((nchunks,), (_THREADS,), (*args, ends - kept, quota, out))
    return out


def topk(x: cupy.ndarray, k: int) -> cupy.ndarray:
    """Indices of the ``k`` largest ``|x|``, sorted; among equal magnitudes the lower index wins.

    Args:
        x: float16/32/64 data (NaN ranks above inf).
        k: how many, ``0 <= k <= x.size``.
    """
    n = x.size
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if k == 0:
        return cupy.empty(0, dtype=cupy.int64)
    keys, mask = _keys(x)
    if k == n:
        return cupy.arange(n, dtype=cupy.int64)
    state = _state(0, k)
    _radix_select(keys, mask, state)
    return _compact(keys, mask, state, total=k)  # exactly k by construction: no sync


def threshold(x: cupy.ndarray, tau: float) -> cupy.ndarray:
    """Sorted indices with ``|x| >= tau`` (NaN counts as larger than any number).

    Args:
        x: float16/32/64 data.
        tau: the threshold, a host number (rounded to ``x.dtype`` like the reference does).
    """
    keys, mask = _keys(x)
    tau_key = int(reference.abs_key(np.array([tau], dtype=x.dtype))[0])
    if tau_key == 0:  # everything qualifies: ">= 0" is "> -1", which unsigned keys cannot express
        return cupy.arange(keys.size, dtype=cupy.int64)
    return _compact(keys, mask, _state(tau_key - 1, 0))


def nonzero(x: cupy.ndarray) -> cupy.ndarray:
    """Sorted indices of the elements that are not zero (NaN included, -0.0 excluded).

    Args:
        x: data of any dtype; floats use the compaction kernels, others ``cupy.flatnonzero``.
    """
    if x.dtype.kind != "f":
        return cupy.flatnonzero(x).astype(cupy.int64, copy=False)  # synchronize! (the count, inside CuPy)
    keys, mask = _keys(x)
    return _compact(keys, mask, _state(0, 0))


def scatter_add(dense: cupy.ndarray, idx: cupy.ndarray, vals: cupy.ndarray) -> None:
    """``dense[idx] += vals`` in place, with NumPy's float arithmetic bit for bit.

    Args:
        dense: 1-D float16/32/64 array, updated in place.
        idx: indices that do not repeat within one call (negative ones count from the end).
        vals: values, broadcast to ``idx`` and cast to ``dense.dtype``.
    """
    if dense.dtype.kind != "f" or dense.dtype.itemsize not in _SCATTER_ADD:
        raise TypeError(f"scatter_add needs float16, float32 or float64 dense data, got {dense.dtype}")
    if dense.ndim != 1:
        raise ValueError(f"scatter_add needs 1-D dense data, got shape {dense.shape}")
    idx = cupy.ascontiguousarray(idx, dtype=cupy.int64).ravel()
    vals = cupy.ascontiguousarray(cupy.broadcast_to(_cast(vals, dense.dtype), idx.shape))
    work = dense if dense.flags.c_contiguous else cupy.ascontiguousarray(dense)
    if dense.dtype == np.float16:  # the kernel does half arithmetic on the bits
        target, vals = work.view(cupy.uint16), vals.view(cupy.uint16)
    else:
        target = work
    _launch("sparse.cu", _SCATTER_ADD[dense.dtype.itemsize], idx.size,
            target, np.int64(work.size), idx, vals, np.int64(idx.size))
    if work is not dense:
        dense[...] = work


# ---------------------------------------------------------------- quantization


def _block_scales(x: cupy.ndarray, block: int, scale_kind: str, qmax: float, out: Any = None) -> cupy.ndarray:
    """Per-block ``norm / qmax`` in float32 (``reference._block_scales``), in ``out`` when it fits.

    The float64 sums follow ``reference.ordered_sum``: one partial per (block, chunk, lane),
    then one thread per block adds them in the contract's order (see quantize.cu).
    """
    kind = _SCALE_KINDS.get(scale_kind)
    if kind is None:
        raise ValueError(f"unknown scale kind {scale_kind!r}")
    block = _check_block(block)
    nblocks = -(-x.size // block)
    scales = _output(out, (nblocks,), np.float32)
    chunk, lanes = reference.REDUCE_CHUNK, reference.REDUCE_LANES
    per_block = -(-block // chunk)
    partial = cupy.empty(nblocks * per_block * lanes, dtype=cupy.float64)
    _launch("quantize.cu", "mpicoll_scale_partials", partial.size, x, np.int64(x.size), np.int64(block),
            np.int32(kind), np.int64(chunk), np.int32(lanes), np.int64(per_block), np.int64(partial.size), partial)
    _launch("quantize.cu", "mpicoll_block_scales", nblocks, partial, np.int64(x.size), np.int64(block),
            np.int32(kind), np.int32(lanes), np.int64(per_block), np.float32(qmax), scales)
    return scales


def quantize(x: cupy.ndarray, bits: int, block: int, scale_kind: str, qmax: int, stochastic: bool, base: int,
             out: tuple[Any, Any] | None = None) -> tuple[cupy.ndarray, cupy.ndarray]:
    """Symmetric per-block quantization to packed ``bits``-bit codes (see :func:`.reference.quantize`).

    Args:
        x: data, converted to float32 first.
        bits: 4 (two codes per byte, the even element in the low nibble) or 8.
        block: elements per scale.
        scale_kind: ``"max"``, ``"l2"`` or ``"mean"``.
        qmax: the largest code magnitude.
        stochastic: round by ``floor(v + u_i)`` with counter-hash uniforms instead of to nearest even.
        base: the 64-bit counter base of the uniforms.
        out: optional ``(packed, scales)`` to write into.

    Returns:
        (packed codes, scales): ``ceil(n * bits / 8)`` uint8 and ``ceil(n / block)`` float32.
    """
    _check_bits(bits)
    block = _check_block(block)
    x = _as_f32(x).ravel()
    n = x.size
    nbytes = (n * bits + 7) // 8
    scales = _block_scales(x, block, scale_kind, qmax, None if out is None else out[1])
    packed = _output(None if out is None else out[0], (nbytes,), np.uint8)
    _launch("quantize.cu", "mpicoll_quantize_pack", nbytes, x, np.int64(n), np.int32(bits), np.int64(block),
            scales, np.float32(qmax), np.int32(bool(stochastic)), _u64(base), packed, np.int64(nbytes))
    return _deliver((packed, scales), out)


def dequantize(packed: cupy.ndarray, scales: cupy.ndarray, n: int, bits: int, block: int,
               out: Any = None) -> cupy.ndarray:
    """``code_i * scale_b`` in float32: the inverse of :func:`quantize` up to rounding.

    Args:
        packed: uint8 codes from :func:`quantize`.
        scales: float32 block scales.
        n: element count.
        bits: 4 or 8.
        block: elements per scale.
        out: optional float32 array of ``n`` to write into.
    """
    _check_bits(bits)
    block = _check_block(block)
    packed = cupy.ascontiguousarray(packed).ravel().view(cupy.uint8)
    scales = _as_f32(scales).ravel()
    _need("packed", packed, (n * bits + 7) // 8)
    _need("scales", scales, -(-n // block))
    result = _output(out, (n,), np.float32)
    _launch("quantize.cu", "mpicoll_dequantize", n,
            packed, scales, np.int64(n), np.int32(bits), np.int64(block), result)
    return _deliver(result, out)


def sign_pack(x: cupy.ndarray, block: int, out: tuple[Any, Any] | None = None) -> tuple[cupy.ndarray, cupy.ndarray]:
    """1 bit per element (1 where ``x < 0``; element ``8j+t`` is bit ``t`` of byte ``j``) and
    per-block scales ``mean |x|``.

    Args:
        x: data, converted to float32 first.
        block: elements per scale.
        out: optional ``(packed, scales)`` to write into.
    """
    x = _as_f32(x).ravel()
    scales = _block_scales(x, block, "mean", 1, None if out is None else out[1])
    nbytes = -(-x.size // 8)
    packed = _output(None if out is None else out[0], (nbytes,), np.uint8)
    _launch("quantize.cu", "mpicoll_sign_pack", nbytes, x, np.int64(x.size), packed, np.int64(nbytes))
    return _deliver((packed, scales), out)


def sign_unpack(packed: cupy.ndarray, scales: cupy.ndarray, n: int, block: int, out: Any = None) -> cupy.ndarray:
    """``(1 - 2 * bit) * scale_b`` in float32.

    Args:
        packed: uint8 sign bits from :func:`sign_pack`.
        scales: float32 block scales.
        n: element count.
        block: elements per scale.
        out: optional float32 array of ``n`` to write into.
    """
    block = _check_block(block)
    packed = cupy.ascontiguousarray(packed).ravel().view(cupy.uint8)
    scales = _as_f32(scales).ravel()
    _need("packed", packed, -(-n // 8))
    _need("scales", scales, -(-n // block))
    result = _output(out, (n,), np.float32)
    _launch("quantize.cu", "mpicoll_sign_unpack", n, packed, scales, np.int64(n), np.int64(block), result)
    return _deliver(result, out)


# ---------------------------------------------------------------- 16-bit floats


def _map16(kernel: cupy.RawKernel, words: cupy.ndarray, dtype: Any, out: Any) -> Any:
    """An elementwise halves.cu kernel over contiguous words; the result has ``dtype`` and the
    words' shape, and lands in ``out`` when given."""
    result = _output(out, words.shape, dtype)
    kernel_words = result.view(_UNSIGNED[np.dtype(dtype).itemsize])  # the kernels write bit patterns
    _run(kernel, words.size, words, np.int64(words.size), kernel_words)
    return _deliver(result, out)


def fp16_encode(x: cupy.ndarray, out: Any = None) -> cupy.ndarray:
    """float32 -> IEEE half bits (uint16): round to nearest even, overflow to inf, NaN -> ``0x7E00 | sign``.

    Args:
        x: data, converted to float32 first.
        out: optional uint16 array of ``x``'s shape to write into.
    """
    return _map16(_kernel("halves.cu", "mpicoll_fp16_encode"), _as_f32(x).view(cupy.uint32), np.uint16, out)


def fp16_decode(h: cupy.ndarray, out: Any = None) -> cupy.ndarray:
    """IEEE half bits -> float32, exact (a NaN keeps its payload, as in NumPy).

    Args:
        h: uint16 (or float16) data.
        out: optional float32 array of ``h``'s shape to write into.
    """
    words = cupy.ascontiguousarray(h).view(cupy.uint16)
    return _map16(_kernel("halves.cu", "mpicoll_fp16_decode"), words, np.float32, out)


def bf16_encode(x: cupy.ndarray, out: Any = None) -> cupy.ndarray:
    """float32 -> bfloat16 bits (uint16): round to nearest even; NaN stays a quiet NaN.

    Args:
        x: data, converted to float32 first.
        out: optional uint16 array of ``x``'s shape to write into.
    """
    return _map16(_kernel("halves.cu", "mpicoll_bf16_encode"), _as_f32(x).view(cupy.uint32), np.uint16, out)


def bf16_decode(h: cupy.ndarray, out: Any = None) -> cupy.ndarray:
    """bfloat16 bits -> float32, exact.

    Args:
        h: uint16 data.
        out: optional float32 array of ``h``'s shape to write into.
    """
    words = cupy.ascontiguousarray(h).view(cupy.uint16)
    return _map16(_kernel("halves.cu", "mpicoll_bf16_decode"), words, np.float32, out)


# ---------------------------------------------------------------- CSR


def csr_build(mat: cupy.ndarray) -> tuple[cupy.ndarray, cupy.ndarray, cupy.ndarray]:
    """CSR of a 2-D array: ``indptr`` (rows+1), column ``indices`` and ``values`` of its nonzeros.

    Args:
        mat: 2-D data with 2-, 4- or 8-byte elements; values are copied bit for bit.
    """
    mat = cupy.ascontiguousarray(mat)
    if mat.ndim != 2:
        raise ValueError(f"csr_build needs a 2-D array, got shape {mat.shape}")
    size = mat.dtype.itemsize
    if size not in _UNSIGNED:
        raise TypeError(f"csr_build needs 2-, 4- or 8-byte elements, got {mat.dtype}")
    rows, cols = mat.shape
    flat = nonzero(mat.ravel())  # sorted row-major positions; one sync for the count
    nnz = flat.size
    indptr = cupy.empty(rows + 1, dtype=cupy.int64)
    _launch("sparse.cu", "mpicoll_csr_indptr", rows + 1, flat, np.int64(nnz), np.int64(rows), np.int64(cols), indptr)
    indices = cupy.empty(nnz, dtype=cupy.int64)
    values = cupy.empty(nnz, dtype=_UNSIGNED[size])
    _launch("sparse.cu", _CSR_FILL[size], nnz,
            flat, np.int64(nnz), np.int64(cols), mat.ravel().view(_UNSIGNED[size]), indices, values)
    return indptr, indices, values.view(mat.dtype)


def csr_densify(indptr: cupy.ndarray, indices: cupy.ndarray, values: cupy.ndarray, shape: tuple[int, int],
                dtype: np.dtype) -> cupy.ndarray:
    """The dense 2-D array of a CSR triple (positions must not repeat).

    Args:
        indptr: ``rows + 1`` row offsets.
        indices: column of each stored value.
        values: the stored values, cast to ``dtype``.
        shape: ``(rows, cols)``.
        dtype: the output dtype (2, 4 or 8 bytes).
    """
    dtype = np.dtype(dtype)
    if dtype.itemsize not in _UNSIGNED:
        raise TypeError(f"csr_densify needs a 2-, 4- or 8-byte dtype, got {dtype}")
    rows, cols = (int(s) for s in shape)
    indptr = cupy.ascontiguousarray(indptr, dtype=cupy.int64).ravel()
    indices = cupy.ascontiguousarray(indices, dtype=cupy.int64).ravel()
    words = _cast(values, dtype).ravel().view(_UNSIGNED[dtype.itemsize])
    _need("indptr", indptr, rows + 1)
    _need("values", words, indices.size)
    out = cupy.zeros((rows, cols), dtype=_UNSIGNED[dtype.itemsize])
    if rows and cols:
        _launch("sparse.cu", _CSR_DENSIFY[dtype.itemsize], indices.size,
                indptr, np.int64(rows), indices, words, np.int64(indices.size), np.int64(cols), out)
    return out.view(dtype)


# ---------------------------------------------------------------- low rank (PowerSGD)


def lowrank_reconstruct(p: cupy.ndarray, q: cupy.ndarray, size: int, out: Any = None) -> cupy.ndarray:
    """See :func:`reference.lowrank_reconstruct`; one thread per output element.

    Args:
        p: ``(n, r)`` float32.
        q: ``(m, r)`` float32.
        size: elements wanted (``<= n * m``).
        out: optional float32 array of ``size`` to write into.
    """
    m, r = reference.lowrank_shape(p, q, size)[1:]
    result = _output(out, (size,), np.float32)
    _launch("lowrank.cu", "mpicoll_lowrank_reconstruct", size,
            cupy.ascontiguousarray(p, dtype=np.float32), cupy.ascontiguousarray(q, dtype=np.float32),
            np.int64(m), np.int64(r), np.int64(size), result)
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
