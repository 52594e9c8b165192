"""The wire format of a compressed payload: one contiguous byte buffer, header first.

::

    offset  size  field
    0       4     magic b"MPCZ"
    4       1     format version (1)
    5       1     wire_id (which compressor wrote it: its class's ``wire_id``)
    6       1     dtype code of the original array
    7       1     flags (bit 0: indices are uint32 rather than int64)
    8       8     numel: elements of the original array
    16      8     aux0   codec-specific (k, block size, nnz, ...)
    24      8     aux1   codec-specific (levels, rows, ...)
    32      8     body_nbytes: bytes after the header
    40      ...   sections (values, indices, scales, ...), each starting at a multiple of 8

Integers are little-endian. A receiver checks every field against what it expects and the
body length against the sections the header implies, so a truncated or foreign payload raises
:class:`PayloadError` instead of decoding into garbage.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import is_cupy, xp_of
from ..errors import ArgumentError, PayloadError

MAGIC = b"MPCZ"
VERSION = 1
HEADER = struct.Struct("<4sBBBBQQQQ")
HEADER_BYTES = HEADER.size  # 40
FLAG_INDEX32 = 1

DTYPES = [np.dtype(t) for t in ("float32", "float64", "float16", "int32", "int64", "uint8", "uint16")]
_DTYPE_CODES = {dtype: code for code, dtype in enumerate(DTYPES)}


def dtype_code(dtype: Any) -> int:
    """The header code of a dtype."""
    try:
        return _DTYPE_CODES[np.dtype(dtype)]
    except KeyError:
        raise PayloadError(f"dtype {np.dtype(dtype)} cannot be described in a payload header; "
                           f"supported: {[str(d) for d in DTYPES]}") from None


@dataclass(frozen=True)
class Header:
    """The parsed fixed-size header."""

    wire_id: int
    dtype: np.dtype
    flags: int
    numel: int
    aux0: int
    aux1: int
    body_nbytes: int

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.wire_id, dtype_code(self.dtype), self.flags, self.numel,
                           self.aux0, self.aux1, self.body_nbytes)


def _align(n: int) -> int:
    return (n + 7) & ~7


def layout(sections: Sequence[tuple[Any, int]]) -> list[tuple[int, int]]:
    """``(offset, nbytes)`` of each ``(dtype, count)`` section, after the header, 8-byte aligned."""
    spans, offset = [], HEADER_BYTES
    for dtype, count in sections:
        nbytes = np.dtype(dtype).itemsize * int(count)
        spans.append((offset, nbytes))
        offset = _align(offset + nbytes)
    return spans


def body_size(sections: Sequence[tuple[Any, int]]) -> int:
    """Bytes after the header for these sections (the last one is not padded)."""
    spans = layout(sections)
    return (spans[-1][0] + spans[-1][1] - HEADER_BYTES) if spans else 0


def allocate(header: Header, spec: Sequence[tuple[Any, int]], xp: Any = np, out: Any = None) -> tuple[Any, list[Any]]:
    """A payload with its header written and its padding zeroed, and views of its sections.

    Args:
        header: the header (its ``body_nbytes`` is computed here).
        spec: ``(dtype, count)`` of each section.
        xp: the array module of the device the payload lives on.
        out: a caller's buffer to reuse (1-D, uint8, contiguous, exactly the right size), so that
            steady-state compression allocates nothing.
    """
    total = HEADER_BYTES + body_size(spec)
    if out is None:
        payload = xp.empty(total, dtype=np.uint8)
    elif getattr(out, "dtype", None) != np.uint8 or out.ndim != 1 or out.size != total or not out.flags.c_contiguous:
        raise ArgumentError(f"payload out= must be a contiguous 1-D uint8 array of {total} bytes, got "
                            f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
    else:
        payload = out
    head = Header(header.wire_id, header.dtype, header.flags, header.numel, header.aux0, header.aux1,
                  total - HEADER_BYTES).pack()
    payload[:HEADER_BYTES] = xp.asarray(np.frombuffer(head, dtype=np.uint8))
    views, end = [], HEADER_BYTES
    for (dtype, count), (offset, nbytes) in zip(spec, layout(spec), strict=True):
        payload[end:offset] = 0  # padding: payloads are bitwise reproducible
        views.append(payload[offset: offset + nbytes].view(np.dtype(dtype))[: int(count)])
        end = offset + nbytes
    return payload, views


def assemble(header: Header, arrays: Sequence[Any], out: Any = None) -> Any:
    """One byte buffer (on the arrays' device): the header, then a copy of each array in its section."""
    xp = xp_of(arrays[0]) if arrays else np
    payload, views = allocate(header, [(a.dtype, a.size) for a in arrays], xp, out)
    for view, array in zip(views, arrays, strict=True):
        view[...] = array.reshape(-1)
    return payload


def parse(payload: Any, wire_id: int, codec_name: str) -> Header:
    """Read and check the header of ``payload`` (a 1-D uint8 array, host or device)."""
    if getattr(payload, "dtype", None) != np.uint8 or payload.ndim != 1 or not payload.flags.c_contiguous:
        raise PayloadError(f"{codec_name}: a payload must be a contiguous 1-D uint8 array, got "
                           f"{type(payload).__name__} {getattr(payload, 'dtype', '')}")
    if payload.size < HEADER_BYTES:
        raise PayloadError(f"{codec_name}: payload of {payload.size} bytes is shorter than the {HEADER_BYTES}-byte "
                           f"header (truncated?)")
    head = payload[:HEADER_BYTES]
    raw = bytes(head.get() if is_cupy(head) else head)  # synchronize! (device payloads)
    magic, version, got_id, dcode, flags, numel, aux0, aux1, body = HEADER.unpack(raw)
    if magic != MAGIC:
        raise PayloadError(f"{codec_name}: not an mpicoll payload (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise PayloadError(f"{codec_name}: payload format version {version}, this mpicoll reads {VERSION}; "
                           f"use the same mpicoll version on every rank")
    if got_id != wire_id:
        raise PayloadError(f"{codec_name}: payload was written by codec #{got_id}, not {codec_name} (#{wire_id}); "
                           f"every rank must use the same compressor")
    if dcode >= len(DTYPES):
        raise PayloadError(f"{codec_name}: unknown dtype code {dcode} in the payload header")
    if body != payload.size - HEADER_BYTES:
        raise PayloadError(f"{codec_name}: header announces {body} body bytes but the payload has "
                           f"{payload.size - HEADER_BYTES} (truncated or padded in transit)")
    return Header(got_id, DTYPES[dcode], flags, numel, aux0, aux1, body)


def expect(header: Header, codec_name: str, **fields: int) -> None:
    """Refuse a payload whose header ``fields`` (``aux0=...``, ``aux1=...``, ``flags=...``) differ from
    what this receiver's own configuration says: a decoder never sizes a loop or an allocation by
    a value it could have known itself."""
    for name, want in fields.items():
        got = getattr(header, name)
        if got != want:
            raise PayloadError(f"{codec_name}: payload header has {name}={got} but this receiver expects {want}: "
                               f"corrupted, or written by a compressor configured differently (every rank must "
                               f"use the same compressor parameters)")


def sections(payload: Any, header: Header, spec: Sequence[tuple[Any, int]], codec_name: str) -> list[Any]:
    """Views of the sections ``spec`` (dtype, count) in ``payload``, after checking the length."""
    expected = body_size(spec)
    if header.body_nbytes != expected:
        raise PayloadError(f"{codec_name}: body has {header.body_nbytes} bytes but its header implies {expected} "
                           f"(numel={header.numel}, aux0={header.aux0}, aux1={header.aux1}): malformed payload")
    views = []
    for (dtype, count), (offset, nbytes) in zip(spec, layout(spec), strict=True):
        views.append(payload[offset: offset + nbytes].view(np.dtype(dtype))[: int(count)])
    return views


def index_dtype(numel: int) -> tuple[np.dtype, int]:
    """The narrowest index type for ``numel`` elements, and the header flag that records it."""
    return (np.dtype(np.uint32), FLAG_INDEX32) if numel <= 1 << 32 else (np.dtype(np.int64), 0)
