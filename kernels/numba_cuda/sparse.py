"""Scatter-add (NumPy's float arithmetic and NaN bits, float16 on bits) and CSR."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numba import cuda

from ...backend import xp_of
from ..ops import implements
from .common import UNSIGNED, Array, f32_bits, float_keys, half_bits, half_table, launch, named
from .selection import select_keys

# ---------------------------------------------------------------- scatter-add

_HALF_QUIET = np.uint16(0x0200)
_HALF_DEFAULT_NAN = np.uint16(0xFE00)


@functools.cache
def _scatter_add_float_kernel(dtype_name: str) -> Any:
    """The float32/float64 kernel: IEEE add, NaN results with NumPy's x86 bits (a NaN operand's
    payload, quieted, the dense one first; the default NaN for inf - inf)."""
    dtype = np.dtype(dtype_name)
    utype = UNSIGNED[dtype.itemsize]
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

    return cuda.jit(named(kernel, f"_scatter_add_{dtype_name}_kernel"))


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
                dense[i] = half_bits(f32_bits(r))


@cuda.jit
def _scatter_add_plain_kernel(dense, idx, vals):
    for j in range(cuda.grid(1), idx.size, cuda.gridsize(1)):
        i = idx[j]
        if i < 0:
            i += dense.size
        dense[i] += vals[j]


@implements("scatter_add")
def scatter_add(dense: Array, idx: Array, vals: Array) -> None:
    """``dense[idx] += vals`` in place; ``idx`` must not repeat within one call.

    Args:
        dense: contiguous 1-D array, updated in place.
        idx: integer indices into ``dense``.
        vals: values, cast to ``dense.dtype`` first (by the array library, as the reference does).
    """
    if not dense.flags.c_contiguous:
        raise ValueError("scatter_add needs a contiguous dense array (it is updated in place)")
    xp = xp_of(dense)
    idx = xp.ascontiguousarray(idx, dtype=np.int64).reshape(-1)
    vals = xp.ascontiguousarray(vals.astype(dense.dtype, copy=False)).reshape(-1)
    flat = dense.reshape(-1)
    if dense.dtype == np.float16:
        table = half_table(xp).view(np.float32)
        launch(_scatter_add_half_kernel, idx.size, flat.view(np.uint16), idx, vals.view(np.uint16), table)
    elif dense.dtype in (np.float32, np.float64):
        launch(_scatter_add_float_kernel(dense.dtype.name), idx.size, flat, idx, vals)
    else:
        launch(_scatter_add_plain_kernel, idx.size, flat, idx, vals)



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


@implements("csr_build")
def csr_build(mat: Array) -> tuple[Array, Array, Array]:
    """CSR of a 2-D float array: ``indptr`` (rows+1), column ``indices`` and ``values`` of its
    nonzeros (``!= 0``: NaN included, -0.0 excluded).

    Args:
        mat: 2-D float16/32/64 array.

    Returns:
        ``(indptr, indices, values)``: int64, int64, and ``mat.dtype``.
    """
    xp = xp_of(mat)
    rows, cols = mat.shape
    keys, mask = float_keys(mat)
    flat = select_keys(keys, mask, 1, 0, 0)  # sorted flat indices: row-major, which is CSR order
    if flat.size == 0:
        return xp.zeros(rows + 1, dtype=np.int64), xp.empty(0, dtype=np.int64), xp.empty(0, dtype=mat.dtype)
    indptr = xp.empty(rows + 1, dtype=np.int64)
    indices = xp.empty(flat.size, dtype=np.int64)
    values = xp.empty(flat.size, dtype=keys.dtype)
    launch(_csr_indptr_kernel, rows + 1, flat, np.int64(cols), indptr)
    launch(_csr_gather_kernel, flat.size, keys, flat, np.int64(cols), indices, values)
    return indptr, indices, values.view(mat.dtype)


@cuda.jit
def _csr_densify_kernel(indptr, indices, values, out):
    for r in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        for p in range(indptr[r], indptr[r + 1]):
            out[r, indices[p]] = values[p]


@implements("csr_densify")
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
    xp = xp_of(values)
    utype = UNSIGNED[dtype.itemsize]
    out = xp.zeros(tuple(shape), dtype=utype)
    if indices.size:
        bits = xp.ascontiguousarray(values.astype(dtype, copy=False)).reshape(-1).view(utype)
        launch(_csr_densify_kernel, out.shape[0], xp.ascontiguousarray(indptr, dtype=np.int64).reshape(-1),
               xp.ascontiguousarray(indices, dtype=np.int64).reshape(-1), bits, out)
    return out.view(dtype)
