"""``csr``: compressed sparse rows of a 2-D gradient whose rows are mostly zero (embedding tables).

Lossless: ``indptr`` (rows + 1), column indices and values of the nonzeros. An embedding
gradient touches only the rows of the tokens in the batch, so most rows are empty and cost one
``indptr`` entry each.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ArgumentError, PayloadError
from .base import Compressor, Ctx
from .payload import Header, expect, index_dtype
from .registry import register
from .sparse import check_indices


@register
class Csr(Compressor):
    """CSR for 2-D arrays."""

    name = "csr"
    wire_id = 12
    kind = "sparse"
    lossless = True

    def compress(self, x: Any, key: Any = None, *, out: Any = None) -> tuple[Any, Ctx]:
        if getattr(x, "ndim", 0) != 2:
            raise ArgumentError(f"csr: needs a 2-D array (rows x columns), got shape {getattr(x, 'shape', None)}; "
                                f"use 'coo' for other shapes")
        return super().compress(x, key, out=out)

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        rows, cols = ctx.shape
        indptr, indices, values = self.kernel("csr_build", ctx.device)(flat.reshape(rows, cols))
        itype, flag = index_dtype(max(cols, int(indices.size)))
        return self._payload(ctx, [indptr.astype(itype), indices.astype(itype), values], aux0=int(indices.size),
                             aux1=rows, flags=flag, out=out)

    def sparse_parts(self, payload: Any, ctx: Ctx) -> tuple[Any, Any]:
        return _csr_parts(self, payload, ctx)

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        rows, cols = ctx.shape
        if header.aux1 != rows or header.aux0 > ctx.numel:
            raise PayloadError(f"csr: payload describes {header.aux1} rows / {header.aux0} nonzeros, this tensor has "
                               f"shape {ctx.shape}")
        itype, flag = index_dtype(max(cols, header.aux0))
        expect(header, self.name, flags=flag)
        indptr, indices, values = self._sections(payload, header, [(itype, rows + 1), (itype, header.aux0),
                                                                   (ctx.dtype, header.aux0)])
        indptr, indices = indptr.astype(np.int64), indices.astype(np.int64)
        if int(indptr[0]) != 0 or int(indptr[-1]) != header.aux0 or bool((indptr[1:] < indptr[:-1]).any()):
            raise PayloadError("csr: row pointers are not a non-decreasing run from 0 to nnz: malformed payload")
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= cols):
            raise PayloadError(f"csr: a column index lies outside [0, {cols}): corrupted payload")
        # columns in range: strictly increasing flat positions <=> strictly increasing columns in each row
        check_indices("csr", indices + indptr_rows(indptr, rows) * cols, ctx.numel)
        return self.kernel("csr_densify", ctx.device)(indptr, indices, values, (rows, cols), ctx.dtype).reshape(-1)


def _csr_parts(codec: Csr, payload: Any, ctx: Ctx) -> tuple[Any, Any]:
    dense = codec.decompress(payload, ctx).reshape(-1)
    idx = codec.kernel("nonzero", ctx.device)(dense)
    return idx, dense[idx]


def indptr_rows(indptr: Any, rows: int) -> Any:
    """The row of each nonzero, from the row pointers."""
    from ..backend import xp_of

    xp = xp_of(indptr)
    return xp.repeat(xp.arange(rows, dtype=np.int64), xp.diff(indptr))
