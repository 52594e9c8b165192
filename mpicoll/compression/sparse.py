"""Shared (index, value) payloads of the sparse compressors: top-k, threshold, COO.

Indices travel as uint32 when the tensor has at most 2**32 elements (int64 otherwise) and must
be strictly increasing and inside the tensor: a decoder checks both, so a corrupted payload
raises instead of writing out of bounds.
"""

from __future__ import annotations

from typing import Any

from ..backend import xp_of
from ..errors import PayloadError
from .base import Compressor, Ctx
from .payload import Header, expect, index_dtype


def encode(codec: Compressor, ctx: Ctx, flat: Any, idx: Any, out: Any = None) -> Any:
    """Payload ``[indices, values]`` for the elements ``idx`` of ``flat``."""
    itype, flag = index_dtype(ctx.numel)
    return codec._payload(ctx, [idx.astype(itype), flat[idx]], aux0=int(idx.size), flags=flag, out=out)


def decode(codec: Compressor, payload: Any, header: Header, ctx: Ctx, out: Any = None) -> Any:
    """The dense array of an ``[indices, values]`` payload (written into ``out`` when given)."""
    idx, values = sections(codec, payload, header, ctx)
    if out is None:
        dense = xp_of(values).zeros(ctx.numel, dtype=ctx.dtype)
    else:
        dense = out
        dense[...] = 0
    if idx.size:
        codec.kernel("scatter_add", ctx.device)(dense, idx, values)
    return dense


def parts(codec: Compressor, payload: Any, ctx: Ctx) -> tuple[Any, Any]:
    """Checked ``(indices, values)`` of a whole sparse payload (header included)."""
    return sections(codec, payload, codec.header_of(payload, ctx), ctx)


def sections(codec: Compressor, payload: Any, header: Header, ctx: Ctx) -> tuple[Any, Any]:
    """Checked ``(indices as int64, values)`` views of a sparse payload."""
    itype, flag = index_dtype(ctx.numel)
    expect(header, codec.name, flags=flag, aux1=0)
    nnz = header.aux0
    if nnz > ctx.numel:
        raise PayloadError(f"{codec.name}: payload claims {nnz} nonzeros in a tensor of {ctx.numel} elements")
    raw_idx, values = codec._sections(payload, header, [(itype, nnz), (ctx.dtype, nnz)])
    idx = raw_idx.astype("int64")
    check_indices(codec.name, idx, ctx.numel)
    return idx, values


def check_indices(name: str, idx: Any, numel: int) -> None:
    """Indices must be strictly increasing and inside ``[0, numel)``."""
    if idx.size == 0:
        return
    xp = xp_of(idx)
    bad_order = bool(xp.any(idx[1:] <= idx[:-1])) if idx.size > 1 else False  # synchronize! (device)
    if int(idx[0]) < 0 or int(idx[-1]) >= numel or bad_order:
        raise PayloadError(f"{name}: payload indices are not strictly increasing inside [0, {numel}): "
                           f"corrupted or from a tensor of another shape")
