"""Scatter-add and CSR, on the IEEE bits where Numba lacks the dtype's arithmetic."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import reference
from ..ops import implements
from .common import OPTS, UNSIGNED, bit_keys


@njit(**OPTS)
def _scatter_add(dense, idx, vals):
    for i in prange(idx.size):
        dense[idx[i]] += vals[i]


@implements("scatter_add")
def scatter_add(dense: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> None:
    if dense.dtype == np.float16:  # Numba has no float16 arithmetic: the reference does it
        reference.scatter_add(dense, idx, vals)
        return
    _scatter_add(dense, np.ascontiguousarray(idx, dtype=np.int64), vals.astype(dense.dtype, copy=False))


@njit(**OPTS)
def _csr_build(bits, mask):
    rows, cols = bits.shape
    counts = np.zeros(rows, dtype=np.int64)
    for r in prange(rows):
        c = 0
        for j in range(cols):
            if bits[r, j] & mask:
                c += 1
        counts[r] = c
    indptr = np.zeros(rows + 1, dtype=np.int64)
    for r in range(rows):
        indptr[r + 1] = indptr[r] + counts[r]
    indices = np.empty(indptr[rows], dtype=np.int64)
    values = np.empty(indptr[rows], dtype=bits.dtype)
    for r in prange(rows):
        pos = indptr[r]
        for j in range(cols):
            if bits[r, j] & mask:
                indices[pos] = j
                values[pos] = bits[r, j]
                pos += 1
    return indptr, indices, values


@implements("csr_build")
def csr_build(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys, mask = bit_keys(np.ascontiguousarray(mat))
    indptr, indices, values = _csr_build(keys, mask)
    return indptr, indices, values.view(mat.dtype)


@njit(**OPTS)
def _csr_densify(indptr, indices, values, out):
    for r in prange(out.shape[0]):
        for p in range(indptr[r], indptr[r + 1]):
            out[r, indices[p]] = values[p]


@implements("csr_densify")
def csr_densify(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, shape: tuple[int, int],
                dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    utype = UNSIGNED[dtype.itemsize]
    out = np.zeros(shape, dtype=utype)
    _csr_densify(np.ascontiguousarray(indptr, dtype=np.int64), np.ascontiguousarray(indices, dtype=np.int64),
                 np.ascontiguousarray(values).view(utype), out)
    return out.view(dtype)
