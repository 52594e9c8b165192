"""Scatter-add with NumPy's float arithmetic bit for bit, and CSR (sparse.cu)."""

from __future__ import annotations

import cupy
import numpy as np

from ..ops import check_length, implements
from .common import UNSIGNED, launch
from .halves import cast
from .selection import nonzero

_CSR_FILL = {2: "mpicoll_csr_fill_u16", 4: "mpicoll_csr_fill_u32", 8: "mpicoll_csr_fill_u64"}
_CSR_DENSIFY = {2: "mpicoll_csr_densify_u16", 4: "mpicoll_csr_densify_u32", 8: "mpicoll_csr_densify_u64"}
_SCATTER_ADD = {2: "mpicoll_scatter_add_f16", 4: "mpicoll_scatter_add_f32", 8: "mpicoll_scatter_add_f64"}


@implements("scatter_add")
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
    vals = cupy.ascontiguousarray(cupy.broadcast_to(cast(vals, dense.dtype), idx.shape))
    work = dense if dense.flags.c_contiguous else cupy.ascontiguousarray(dense)
    if dense.dtype == np.float16:  # the kernel does half arithmetic on the bits
        target, vals = work.view(cupy.uint16), vals.view(cupy.uint16)
    else:
        target = work
    launch("sparse.cu", _SCATTER_ADD[dense.dtype.itemsize], idx.size,
           target, np.int64(work.size), idx, vals, np.int64(idx.size))
    if work is not dense:
        dense[...] = work



@implements("csr_build")
def csr_build(mat: cupy.ndarray) -> tuple[cupy.ndarray, cupy.ndarray, cupy.ndarray]:
    """CSR of a 2-D array: ``indptr`` (rows+1), column ``indices`` and ``values`` of its nonzeros.

    Args:
        mat: 2-D data with 2-, 4- or 8-byte elements; values are copied bit for bit.
    """
    mat = cupy.ascontiguousarray(mat)
    if mat.ndim != 2:
        raise ValueError(f"csr_build needs a 2-D array, got shape {mat.shape}")
    size = mat.dtype.itemsize
    if size not in UNSIGNED:
        raise TypeError(f"csr_build needs 2-, 4- or 8-byte elements, got {mat.dtype}")
    rows, cols = mat.shape
    flat = nonzero(mat.ravel())  # sorted row-major positions; one sync for the count
    nnz = flat.size
    indptr = cupy.empty(rows + 1, dtype=cupy.int64)
    launch("sparse.cu", "mpicoll_csr_indptr", rows + 1, flat, np.int64(nnz), np.int64(rows), np.int64(cols), indptr)
    indices = cupy.empty(nnz, dtype=cupy.int64)
    values = cupy.empty(nnz, dtype=UNSIGNED[size])
    launch("sparse.cu", _CSR_FILL[size], nnz,
           flat, np.int64(nnz), np.int64(cols), mat.ravel().view(UNSIGNED[size]), indices, values)
    return indptr, indices, values.view(mat.dtype)


@implements("csr_densify")
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
    if dtype.itemsize not in UNSIGNED:
        raise TypeError(f"csr_densify needs a 2-, 4- or 8-byte dtype, got {dtype}")
    rows, cols = (int(s) for s in shape)
    indptr = cupy.ascontiguousarray(indptr, dtype=cupy.int64).ravel()
    indices = cupy.ascontiguousarray(indices, dtype=cupy.int64).ravel()
    words = cast(values, dtype).ravel().view(UNSIGNED[dtype.itemsize])
    check_length("indptr", indptr, rows + 1)
    check_length("values", words, indices.size)
    out = cupy.zeros((rows, cols), dtype=UNSIGNED[dtype.itemsize])
    if rows and cols:
        launch("sparse.cu", _CSR_DENSIFY[dtype.itemsize], indices.size,
               indptr, np.int64(rows), indices, words, np.int64(indices.size), np.int64(cols), out)
    return out.view(dtype)
