"""Sparse compressors (top-k, threshold, COO, CSR): allgather the pairs, or merge them pairwise.

- ``sparse_allgather``: payload sizes ride on the call's agreement (with validation off they are
  exchanged first), then every rank's payload is gathered
  (``allgatherv``) and every rank scatter-adds all of them, in rank order, into a dense float32
  sum. One round; each rank receives ``(p-1)`` payloads: good for a few ranks.
- ``sparse_rd``: recursive doubling on sparse vectors (Renggli et al., SparCML, 2019): each
  round merges the partner's (index, value) pairs into one's own, lower group first. Once a
  merged vector passes ``DENSE_SWITCH`` of the dense size (:mod:`mpicoll.model.rules`, which the
  cost model reads too), it continues as a dense vector, since pairs would then cost more than the
  dense array. ``log2 k`` rounds (``k`` the largest power of two <= p), two more on the extra
  ranks of a non-power of two (their vector in, the finished one back): good for many ranks.

Both give every rank the same bits: the additions happen in an order that does not depend on
the rank that performs them.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from .. import kernels
from ..collectives.internal import Pof2, displacements, register
from ..compression import Compressor
from ..compression.sparse import check_indices
from ..errors import PayloadError
from ..model.rules import DENSE_SWITCH
from ..transport import Comm
from ..transport.p2p import sendrecv_bounded
from .path import Parts, Path, Prepared, acc_dtype, gather_payloads


class SparsePath(Path):
    """Common ``prepare``: compress, and check this rank's own (index, value) pairs."""

    def prepare(self, comm: Comm, x: Any, compressor: Compressor, key: Hashable, parts: Parts = None,
                average: bool = False) -> Prepared:
        payload, ctx = compressor.compress(x, key)
        idx, values = compressor.sparse_parts(payload, ctx)
        return Prepared(compressor, ctx, payload=payload, state=(idx, values), average=average,
                        announce=payload.size)


class SparseAllgather(SparsePath):
    """Gather every rank's sparse payload and add them all, in rank order."""

    def run(self, comm: Comm, prepared: Prepared) -> Any:
        ctx, compressor = prepared.ctx, prepared.compressor
        dense = np.zeros(ctx.numel, dtype=acc_dtype(ctx.dtype))
        found = gather_payloads(comm, prepared)
        if found is None:  # recorded, on every rank alike
            return dense.reshape(ctx.shape)
        gathered, sizes = found
        scatter_add = kernels.get("scatter_add", ctx.device)
        for rank, (start, size) in enumerate(zip(displacements(sizes), sizes, strict=True)):
            parts = prepared.guard(f"rank {rank}'s payload", compressor.sparse_parts, gathered[start: start + size],
                                   ctx)
            if parts is not None:
                prepared.guard(f"adding rank {rank}'s payload", scatter_add, dense, parts[0],
                               parts[1].astype(dense.dtype, copy=False))
        return prepared.mean(dense, comm.size).reshape(ctx.shape)


register("compressed_allreduce", "sparse_allgather")(SparseAllgather())

def _merge(lower: tuple[Any, Any], upper: tuple[Any, Any]) -> tuple[Any, Any]:
    """Sorted union of two sparse vectors, adding values at shared indices (lower's first)."""
    idx = np.concatenate([lower[0], upper[0]])
    values = np.concatenate([lower[1], upper[1]])
    order = np.argsort(idx, kind="stable")  # equal indices: lower's entry stays first
    idx, values = idx[order], values[order]
    starts = np.flatnonzero(np.concatenate([[True], idx[1:] != idx[:-1]])) if idx.size else idx[:0]
    return idx[starts], np.add.reduceat(values, starts) if idx.size else values


def _to_dense(state: tuple[Any, Any] | Any, numel: int, dtype: np.dtype) -> Any:
    if not isinstance(state, tuple):
        return state
    dense = np.zeros(numel, dtype=dtype)
    dense[state[0]] = state[1]
    return dense


def _index_dtype(numel: int) -> np.dtype:
    """The indices' type in a ``sparse_rd`` message: int32 while the tensor's element count allows
    it, int64 beyond (the codecs' own payloads stay 4-byte up to 2**32 elements: between the two a
    pair costs 4 bytes more here than the model counts). Every rank knows ``numel`` (agreed), so
    both ends read the same width. With int64 everywhere a float32 pair cost 12 bytes on the wire,
    1.5x the 8 of the codec's own payload, which the cost model counts: at 16 MiB on 2 hosts
    sparse_rd measured 18-34% slower than predicted, and 58-62% on 4-6 hosts (issue 17)."""
    return np.dtype(np.int32) if numel <= np.iinfo(np.int32).max else np.dtype(np.int64)


def _pack(state: tuple[Any, Any] | Any, numel: int) -> tuple[Any, int]:
    """One message: a dense array, or the values followed by their indices (:func:`_index_dtype`;
    values first, so the values lie aligned after the 8-byte count, and int32 indices too; int64
    ones may not be, which NumPy reads correctly, only slower), as bytes; and its element count
    (``-1``: dense)."""
    if not isinstance(state, tuple):
        return state.view(np.uint8), -1
    idx, values = state
    return np.concatenate([values.view(np.uint8), idx.astype(_index_dtype(numel), copy=False).view(np.uint8)]), idx.size


def _unpack(raw: Any, nnz: int, numel: int, dtype: np.dtype) -> tuple[Any, Any] | Any:
    """A peer's state, checked: the sizes its message really has, indices strictly increasing inside
    the tensor (as every merged vector is). Anything else is a :class:`PayloadError`."""
    index = _index_dtype(numel)
    expected = numel * dtype.itemsize if nnz == -1 else nnz * (index.itemsize + dtype.itemsize)
    if raw is None or not -1 <= nnz <= numel or raw.size != expected:
        got = "more bytes than any vector of this tensor" if raw is None else f"{raw.size} bytes"
        raise PayloadError(f"sparse_rd: a vector announced with {nnz} nonzeros came as {got}")
    if nnz < 0:
        return raw.view(dtype)
    cut = nnz * dtype.itemsize
    idx = raw[cut:].view(index)
    check_indices("sparse_rd", idx, numel)
    return idx, raw[:cut].view(dtype)


def _transfer(comm: Comm, prepared: Prepared, state: Any, peer: int, tag: int, numel: int, dtype: np.dtype,
              send: bool = True, receive: bool = True) -> Any:
    """Send our state to ``peer`` and/or receive theirs: one message, its element count (8 bytes)
    followed by the data, whose size MPI reports (so each round costs one latency, not two). A
    malformed vector is recorded and counts as empty."""
    message = None
    if send:
        raw, nnz = _pack(state, numel)
        message = np.concatenate([np.array([nnz], dtype=np.int64).view(np.uint8), raw])
    incoming = sendrecv_bounded(comm, message, peer if send else None, peer if receive else None, tag,
                                8 + numel * (_index_dtype(numel).itemsize + dtype.itemsize))
    if not receive:
        return None
    checked = prepared.guard(f"rank {peer}'s vector", _unpack_message, incoming, numel, dtype)
    return (np.empty(0, np.int64), np.empty(0, dtype)) if checked is None else checked


def _unpack_message(message: Any, numel: int, dtype: np.dtype) -> tuple[Any, Any] | Any:
    """A peer's message: its announced element count, then the vector (see :func:`_unpack`)."""
    if message is None or message.size < 8:
        got = "more bytes than any vector of this tensor" if message is None else f"{message.size} bytes"
        raise PayloadError(f"sparse_rd: a vector message came as {got}")
    return _unpack(message[8:], int(message[:8].view(np.int64)[0]), numel, dtype)


def _combine(lower: Any, upper: Any, numel: int, dtype: np.dtype) -> Any:
    """Add two states (sparse or dense); stays sparse while the result is sparse enough."""
    if isinstance(lower, tuple) and isinstance(upper, tuple):
        merged = _merge(lower, upper)
        return merged if merged[0].size <= DENSE_SWITCH * numel else _to_dense(merged, numel, dtype)
    total = _to_dense(lower, numel, dtype).copy()
    if isinstance(upper, tuple):
        total[upper[0]] += upper[1]
    else:
        total += upper
    return total


class SparseRecursiveDoubling(SparsePath):
    """SparCML-style recursive doubling on sparse vectors, switching to dense when they fill up."""

    def run(self, comm: Comm, prepared: Prepared) -> Any:
        ctx = prepared.ctx
        dtype = acc_dtype(ctx.dtype)
        idx, values = prepared.state
        total = _recursive_doubling(comm, prepared, (np.asarray(idx, dtype=np.int64), np.asarray(values, dtype=dtype)),
                                    ctx.numel, dtype)
        return prepared.mean(total, comm.size).reshape(ctx.shape)


register("compressed_allreduce", "sparse_rd")(SparseRecursiveDoubling())


def _recursive_doubling(comm: Comm, prepared: Prepared, state: Any, n: int, dtype: np.dtype) -> Any:
    """Recursive doubling (folding the extra ranks of a non-power of two) over sparse/dense states."""
    tag, group, r = comm.new_tag(), Pof2.of(comm), comm.rank
    folded = r < 2 * group.rem
    if folded and r % 2 == 0:  # fold: even ranks hand their vector to r + 1 ...
        _transfer(comm, prepared, state, r + 1, tag, n, dtype, receive=False)
    elif folded:
        state = _combine(_transfer(comm, prepared, state, r - 1, tag, n, dtype, send=False), state, n, dtype)
    for partner, peer_first in group.partners:  # empty for the ranks that sat out
        theirs = _transfer(comm, prepared, state, partner, tag, n, dtype)
        state = _combine(theirs, state, n, dtype) if peer_first else _combine(state, theirs, n, dtype)
    if folded and r % 2 == 0:  # ... and get the result back
        state = _transfer(comm, prepared, state, r + 1, tag, n, dtype, send=False)
    elif folded:
        _transfer(comm, prepared, state, r - 1, tag, n, dtype, receive=False)
    return _to_dense(state, n, dtype)  # a new array in every case (the caller divides it in place)
