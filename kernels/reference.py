"""The NumPy reference of every kernel operation: simple, obviously right, the oracle.

Every other provider (Numba CPU, Numba CUDA, CuPy) implements the same functions with the same
signatures and must return bitwise identical results; the parity tests compare them with these.
The exact contract of each operation is written here, once; its parameters and argument checks
are declared once in :mod:`.ops` (which every provider's ``@implements`` applies).

Conventions: ``x`` is a 1-D contiguous array; indices are int64 and sorted ascending; packed
codes are uint8; scales are float32. The encoding and decoding operations take an optional
``out=`` (an array, or a tuple of arrays for two results) so that a caller can write straight
into a payload buffer without allocating. Orderings that would otherwise depend on parallel
scheduling are fixed by the contract: selection ties go to the lower index; sums that feed a
scale are float64 in a fixed order (see :func:`ordered_sum`) that lets a provider use SIMD
lanes and many threads on one block and still produce the same bits.
"""

from __future__ import annotations

import sys

import numpy as np

from .arrays import deliver
from .hashing import mix64_array, uniform24
from .ops import collect, implements, lowrank_shape

# ---------------------------------------------------------------- ordering keys


def abs_key(x: np.ndarray) -> np.ndarray:
    """Unsigned integers that order like ``|x|`` (IEEE bits of ``|x|``); NaN ranks above inf."""
    unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize]
    return np.abs(x).view(unsigned)


# ---------------------------------------------------------------- random numbers


@implements("uniform")
def uniform(base: int, n: int) -> np.ndarray:
    """float32 uniforms in [0, 1): element ``i`` is ``uniform24(base + i)`` (see hashing)."""
    return uniform24(base, 0, n)


@implements("stratified_indices")
def stratified_indices(base: int, n: int, k: int) -> np.ndarray:
    """``k`` distinct sorted indices in ``[0, n)``: one per stratum, drawn by the counter hash.

    Strata are ``[0, n)`` cut into ``k`` runs whose sizes differ by at most one (the first
    ``n % k`` are longer); stratum ``j`` picks ``start_j + mix64(base + j) % size_j``.
    """
    if k == 0:
        return np.empty(0, dtype=np.int64)
    j = np.arange(k, dtype=np.int64)
    small, extra = divmod(n, k)
    size = small + (j < extra)
    start = j * small + np.minimum(j, extra)
    with np.errstate(over="ignore"):
        draw = mix64_array(np.uint64(base) + j.astype(np.uint64))
    return start + (draw % size.astype(np.uint64)).astype(np.int64)


# ---------------------------------------------------------------- selection


@implements("topk")
def topk(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest ``|x|``, sorted; among equal magnitudes the lower index wins."""
    n = x.size
    if k == 0:
        return np.empty(0, dtype=np.int64)
    keys = abs_key(x)
    kth = np.partition(keys, n - k)[n - k]
    above = np.flatnonzero(keys > kth)
    ties = np.flatnonzero(keys == kth)[: k - above.size]
    return np.sort(np.concatenate([above, ties])).astype(np.int64)


@implements("threshold")
def threshold(x: np.ndarray, tau: float) -> np.ndarray:
    """Indices with ``|x| >= tau`` (NaN counts as larger than any number), sorted."""
    tau_key = abs_key(np.array([tau], dtype=x.dtype))[0]
    return np.flatnonzero(abs_key(x) >= tau_key).astype(np.int64)


@implements("nonzero")
def nonzero(x: np.ndarray) -> np.ndarray:
    """Indices of elements that are not zero (NaN included, -0.0 excluded), sorted."""
    return np.flatnonzero(x != 0).astype(np.int64)


@implements("scatter_add")
def scatter_add(dense: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> None:
    """``dense[idx] += vals`` in place; ``idx`` must not repeat within one call."""
    dense[idx] += vals.astype(dense.dtype, copy=False)


# ---------------------------------------------------------------- quantization


REDUCE_CHUNK = 1 << 16
REDUCE_LANES = 8


def _blocks(n: int, block: int) -> int:
    return -(-n // block)


def ordered_sum(rows: np.ndarray) -> np.ndarray:
    """Per-row float64 sums of non-negative terms, in the contract's order.

    A row is cut into chunks of ``REDUCE_CHUNK`` elements. Within a chunk, element ``i`` goes to
    lane ``i % REDUCE_LANES``, each lane summed in index order; the lanes are then added in lane
    order, and the chunk sums in chunk order (``cumsum`` is a plain left-to-right scan). Padding
    with zeros changes nothing, since every term is non-negative.
    """
    nrows, width = rows.shape
    nchunks = max(1, _blocks(width, REDUCE_CHUNK))
    # a row of one chunk is padded to whole lanes only, not to a whole chunk: rows of 256
    # elements padded to 65536 made quantize's l2 scales allocate 2 GiB per million elements
    chunk = REDUCE_CHUNK if nchunks > 1 else max(1, _blocks(width, REDUCE_LANES)) * REDUCE_LANES
    padded = np.zeros((nrows, nchunks * chunk), dtype=np.float64)
    padded[:, :width] = rows
    lanes = padded.reshape(nrows, nchunks, chunk // REDUCE_LANES, REDUCE_LANES)
    lane_sums = np.cumsum(lanes, axis=2)[:, :, -1, :]
    chunk_sums = np.cumsum(lane_sums, axis=2)[:, :, -1]
    return np.cumsum(chunk_sums, axis=1)[:, -1]


def _block_scales(x: np.ndarray, block: int, scale_kind: str, qmax: float) -> np.ndarray:
    nblocks = _blocks(x.size, block)
    padded = np.zeros(nblocks * block, dtype=np.float32)
    padded[: x.size] = x
    rows = padded.reshape(nblocks, block)
    if scale_kind == "max":
        norm = np.abs(rows).max(axis=1)
    elif scale_kind == "l2":
        norm = np.sqrt(ordered_sum(rows.astype(np.float64) ** 2)).astype(np.float32)
    else:  # "mean" (ops.scale_kind_code refused any other kind)
        counts = np.minimum(block, x.size - np.arange(nblocks) * block)
        norm = (ordered_sum(np.abs(rows).astype(np.float64)) / counts).astype(np.float32)
    return (norm / np.float32(qmax)).astype(np.float32)


@implements("quantize")
def quantize(x: np.ndarray, bits: int, block: int, scale_kind: str, qmax: int, stochastic: bool,
             base: int, out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-block quantization to ``bits``-bit signed codes, packed.

    Per block ``b``: ``scale_b = norm_b / qmax`` (``norm`` = max ``|x|`` for ``"max"``, L2 norm for
    ``"l2"`` from an :func:`ordered_sum` of squares, float32), ``v = x * (1 / scale_b)`` in
    float32, code = ``rint(v)`` (half to even) or, stochastic, ``floor(v + u_i)`` with
    ``u_i = uniform(base)[i]``; clipped to
    ``[-qmax, qmax]``; 0 where the scale is 0. Codes are two's complement, ``bits`` = 8 (one per
    byte) or 4 (two per byte, even element in the low nibble).

    Returns:
        (packed codes, scales): ``ceil(n * bits / 8)`` bytes and ``ceil(n / block)`` float32.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    scales = _block_scales(x, block, scale_kind, qmax)
    per_elem = np.repeat(scales, block)[: x.size]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(per_elem > 0, np.float32(1) / per_elem, np.float32(0)).astype(np.float32)
    with np.errstate(invalid="ignore"):  # inf * 0 where a block's scale is inf: code 0, like NaN
        v = (x * inv).astype(np.float32)
    if stochastic:
        codes = np.floor(v + uniform(base, x.size))
    else:
        codes = np.rint(v)
    codes = np.clip(np.nan_to_num(codes, nan=0.0), -qmax, qmax).astype(np.int8)
    return deliver((pack_codes(codes, bits), scales), out)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack int8 codes into bytes: as they are for 8 bits, two nibbles per byte for 4."""
    if bits == 8:
        return codes.view(np.uint8).copy()
    if bits != 4:
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    nibbles = (codes.astype(np.uint8) & 0x0F)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)


def unpack_codes(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """The inverse of :func:`pack_codes`: ``n`` int8 codes."""
    if bits == 8:
        return packed[:n].view(np.int8)
    low = (packed & 0x0F).astype(np.int8)
    high = (packed >> 4).astype(np.int8)
    nibbles = np.empty(packed.size * 2, dtype=np.int8)
    nibbles[0::2], nibbles[1::2] = low, high
    nibbles = nibbles[:n]
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


@implements("dequantize")
def dequantize(packed: np.ndarray, scales: np.ndarray, n: int, bits: int, block: int,
               out: np.ndarray | None = None) -> np.ndarray:
    """``code_i * scale_b`` in float32: the inverse of :func:`quantize` up to rounding."""
    codes = unpack_codes(packed, bits, n).astype(np.float32)
    return deliver((codes * np.repeat(scales, block)[:n]).astype(np.float32), out)


# ---------------------------------------------------------------- 1-bit sign


@implements("sign_pack")
def sign_pack(x: np.ndarray, block: int,
              out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """1 bit per element (1 where ``x < 0``; element ``8j+t`` is bit ``t`` of byte ``j``), and
    per-block scales ``mean |x|`` (an :func:`ordered_sum` in float64, divided, then float32)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    scales = _block_scales(x, block, "mean", 1)
    return deliver((np.packbits(x < 0, bitorder="little"), scales), out)


@implements("sign_unpack")
def sign_unpack(packed: np.ndarray, scales: np.ndarray, n: int, block: int,
                out: np.ndarray | None = None) -> np.ndarray:
    """``(1 - 2 * bit) * scale_b`` in float32."""
    signs = np.unpackbits(packed, count=n, bitorder="little").astype(np.float32)
    values = ((np.float32(1) - np.float32(2) * signs) * np.repeat(scales, block)[:n]).astype(np.float32)
    return deliver(values, out)


# ---------------------------------------------------------------- 16-bit floats

_HALF_NAN = np.uint16(0x7E00)


@implements("fp16_encode")
def fp16_encode(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 -> IEEE half bits (round to nearest even; overflow to inf; NaN -> 0x7E00 | sign)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        half = x.astype(np.float16).view(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        half = half.copy()
        half[nan] = _HALF_NAN | (half[nan] & np.uint16(0x8000))
    return deliver(half, out)


@implements("fp16_decode")
def fp16_decode(h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """IEEE half bits -> float32 (exact)."""
    return deliver(h.view(np.float16).astype(np.float32), out)


@implements("bf16_encode")
def bf16_encode(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 -> bfloat16 bits: round to nearest even on the upper 16 bits; NaN stays a quiet NaN."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    with np.errstate(over="ignore"):
        rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quiet = (bits >> np.uint32(16)) | np.uint32(0x0040)
    return deliver(np.where(nan, quiet, rounded).astype(np.uint16), out)


@implements("bf16_decode")
def bf16_decode(h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """bfloat16 bits -> float32 (exact)."""
    return deliver((h.astype(np.uint32) << np.uint32(16)).view(np.float32), out)


# ---------------------------------------------------------------- CSR


@implements("csr_build")
def csr_build(mat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR of a 2-D array: ``indptr`` (rows+1), column ``indices`` and ``values`` of its nonzeros."""
    rows, cols = np.nonzero(mat)
    indptr = np.zeros(mat.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=mat.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.int64), mat[rows, cols]


@implements("csr_densify")
def csr_densify(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, shape: tuple[int, int],
                dtype: np.dtype) -> np.ndarray:
    """The dense 2-D array of a CSR triple."""
    out = np.zeros(shape, dtype=dtype)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    out[rows, indices] = values
    return out


# ---------------------------------------------------------------- low rank (PowerSGD)


@implements("lowrank_reconstruct")
def lowrank_reconstruct(p: np.ndarray, q: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """The first ``size`` elements of ``p @ q.T`` in row-major order, as float32.

    ``p`` is ``(n, r)``, ``q`` is ``(m, r)``, both float32 with ``n * m >= size``. Element
    ``(i, j)`` is ``p[i,0]*q[j,0] + p[i,1]*q[j,1] + ...``: every product rounded to float32 and
    the products added left to right in float32 (no fused multiply-add, no BLAS blocking), so
    every provider and machine gives the same bits; ``r == 0`` gives zeros. For finite inputs
    (which NaN a NaN result is, is not part of the contract).
    """
    n, m, r = lowrank_shape(p, q, size)
    full = np.zeros((n, m), np.float32)
    for k in range(r):
        term = np.multiply(p[:, k:k + 1], q[None, :, k], dtype=np.float32)
        full = term if k == 0 else np.add(full, term, out=full)
    return deliver(full.reshape(-1)[:size], out)


OPS = collect("numpy", [sys.modules[__name__]])
