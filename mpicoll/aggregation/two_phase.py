"""Quantized compressors (int8, int4, QSGD, sign): the two-phase compressed all-reduce.

The 1-bit Adam scheme (Tang et al., 2021), for any compressor:

1. every rank cuts its array into ``p`` chunks, compresses each, and sends chunk ``j`` to rank
   ``j`` (an all-to-all of payloads: a compressed reduce-scatter);
2. rank ``j`` decodes the ``p`` payloads of chunk ``j`` and adds them in rank order (float32);
3. it compresses that sum again; when the compressor is an
   :class:`~mpicoll.compression.ErrorFeedback`, under the key ``(key, "owner")``, which gives the
   owner its own residual (so the second compression loses nothing over time either), and
4. the owners' payloads are allgathered; every rank decodes all ``p`` chunks.

Each rank sends and receives about ``2 (p-1)/p`` compressed arrays, and every rank decodes the
same phase-2 payloads, so all end with the same bits. A fixed-size codec's payload sizes follow
from the agreed count and codec, so the two data rounds are all it takes (besides the call's
agreement and final verdict); other codecs exchange their sizes before each data round.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

import numpy as np
from mpi4py import MPI

from ..collectives.internal import allgather, displacements, even_counts, register
from ..compression import Compressor, Ctx
from ..transport import Comm
from ..transport.watchdog import waited, waiting_on
from .path import Parts, Path, Prepared


def _compress_chunks(compressor: Compressor, flat: Any, counts: list[int], key: Hashable) -> tuple[list, list]:
    payloads, ctxs = [], []
    for j, (start, count) in enumerate(zip(displacements(counts), counts, strict=True)):
        payload, ctx = compressor.compress(flat[start: start + count], key=(key, "chunk", j))
        payloads.append(payload)
        ctxs.append(ctx)
    return payloads, ctxs


def _fixed_size(prepared: Prepared, payload: Any, size: int, what: str, record: bool = True) -> Any:
    """``payload`` when it has the codec's fixed ``size``, else (never, short of a bug; recorded)
    zeros of that size, which fail every decode: the exchange stays consistent on every rank."""
    if payload.size == size:
        return payload
    if record:
        prepared.errors.append(("PayloadError", f"{what} has {payload.size} bytes, not the {size} bytes of every "
                                f"{prepared.compressor.name} payload of it"))
    return np.zeros(size, dtype=np.uint8)


def _alltoall_bytes(comm: Comm, prepared: Prepared, payloads: list[Any], bounds: list[int],
                    fixed: bool) -> list[Any] | None:
    """Send ``payloads[j]`` to rank ``j``; return what every rank sent us, in rank order.

    With a fixed-size codec (``fixed``: int8, int4, qsgd, sign, ...), ``bounds[j]`` is chunk ``j``'s
    exact payload size, computed alike on every rank from agreed values: no sizes are exchanged.
    Otherwise the sizes go first, as one allgathered ``p x p`` table (row ``r``: what rank ``r``
    sends to each rank), so that every rank checks every announced size against the bound of its
    chunk and all reach the same verdict without a round of their own. ``None`` on every rank
    (recorded by the receivers concerned) when any size is out of bounds: nothing is allocated
    from an unchecked size."""
    if fixed:
        payloads = [_fixed_size(prepared, payload, bounds[j], f"rank {comm.rank}'s chunk {j}")
                    for j, payload in enumerate(payloads)]
        send_sizes = np.asarray(bounds, dtype=np.int64)
        recv_sizes = np.full(comm.size, bounds[comm.rank], dtype=np.int64)
    else:
        send_sizes = np.array([p.size for p in payloads], dtype=np.int64)
        table = allgather(comm, send_sizes)
        out_of_bounds = (table < 0) | (table > np.asarray(bounds, dtype=np.int64)[None, :])
        if out_of_bounds.any():
            too_large = np.flatnonzero(out_of_bounds[:, comm.rank]).tolist()
            if too_large:
                prepared.errors.append(("PayloadError", f"ranks {too_large} announced chunk payloads larger than "
                                        f"any {prepared.compressor.name} payload of this chunk "
                                        f"({bounds[comm.rank]} bytes)"))
            return None
        recv_sizes = np.ascontiguousarray(table[:, comm.rank])
    sendbuf = np.concatenate(payloads) if payloads else np.empty(0, np.uint8)
    recvbuf = np.empty(int(recv_sizes.sum()), dtype=np.uint8)
    waiting_on(None, "the exchange of chunks")
    comm.mpi.Alltoallv([sendbuf, (send_sizes, displacements(send_sizes)), MPI.BYTE],
                       [recvbuf, (recv_sizes, displacements(recv_sizes)), MPI.BYTE])
    waited()
    starts = displacements(recv_sizes)
    return [recvbuf[s: s + n] for s, n in zip(starts, recv_sizes, strict=True)]


class TwoPhase(Path):
    """Compressed reduce-scatter to chunk owners, re-compression, compressed allgather."""

    def prepare(self, comm: Comm, x: Any, compressor: Compressor, key: Hashable, parts: Parts = None,
                average: bool = False) -> Prepared:
        flat = np.ascontiguousarray(x).reshape(-1)
        counts = even_counts(flat.size, comm.size)
        payloads, chunk_ctxs = _compress_chunks(compressor, flat, counts, key)
        bounds = [compressor.payload_bound(ctx) for ctx in chunk_ctxs]  # exact sizes for a fixed-size codec
        fixed = compressor.payload_nbytes(flat[: counts[0]]) is not None  # the codec's trait, agreed with it
        return Prepared(compressor, chunk_ctxs[comm.rank], payload=payloads,
                        state=(x.shape, counts, bounds, fixed, key), average=average)

    def run(self, comm: Comm, prepared: Prepared) -> Any:
        shape, counts, bounds, fixed, key = prepared.state
        total = prepared.mean(_owner_sum(comm, prepared, prepared.payload, prepared.ctx, bounds, fixed), comm.size)
        return _owner_allgather(comm, prepared, total, counts, key, fixed).reshape(shape)


register("compressed_allreduce", "two_phase")(TwoPhase())


def _owner_sum(comm: Comm, prepared: Prepared, payloads: list[Any], mine: Ctx, bounds: list[int],
               fixed: bool) -> Any:
    """Phases 1-2: send chunk j to rank j; add the p copies of our chunk, in rank order (in
    :func:`acc_dtype`: float32 for float16)."""
    received = _alltoall_bytes(comm, prepared, payloads, bounds, fixed) or []
    return prepared.sum_decoded(mine, ((f"rank {rank}'s chunk {comm.rank}", theirs)
                                       for rank, theirs in enumerate(received)))


def _owner_allgather(comm: Comm, prepared: Prepared, total: Any, counts: list[int], key: Hashable,
                     fixed: bool) -> Any:
    """Phases 3-4: compress the owned chunk again (the sum, or already the mean, so that float16
    input never overflows on the way), allgather the owners' payloads (their sizes first, unless
    the codec's sizes are fixed), decode all."""
    compressor = prepared.compressor
    # ErrorFeedback keeps an owner-side residual under this key
    owned = prepared.guard("compressing the owned chunk", compressor.compress, total, (key, "owner"))
    owner_payload = np.empty(0, np.uint8) if owned is None else owned[0]  # an empty payload fails every decode
    step = -1 if owned is None else owned[1].step  # the same on every rank (every owner compresses this key)
    out = np.zeros(sum(counts), dtype=total.dtype)
    bounds = [compressor.payload_bound(Ctx((count,), total.dtype, (key, "owner"), step, "cpu")) for count in counts]
    if fixed:  # every owner's payload size is known: no size round
        owner_payload = _fixed_size(prepared, owner_payload, bounds[comm.rank], f"rank {comm.rank}'s reduced chunk",
                                    record=owned is not None)
        sizes = np.asarray(bounds, dtype=np.int64)
    else:
        sizes = allgather(comm, np.array([owner_payload.size], dtype=np.int64)).reshape(-1)
    if any(size > bound for size, bound in zip(sizes, bounds, strict=True)):  # the same sizes everywhere
        prepared.errors.append(("PayloadError", f"an owner announced a reduced chunk of {sizes.max()} bytes, more "
                                f"than any {compressor.name} payload of it"))
        return out
    gathered = allgather(comm, owner_payload, sizes)
    for j, (start, count, at) in enumerate(zip(displacements(counts), counts, displacements(sizes), strict=True)):
        chunk_ctx = Ctx((count,), total.dtype, (key, "owner"), step, "cpu")
        # straight into the result (a payload that fails to decode fails the whole call, on every rank)
        prepared.guard(f"rank {j}'s reduced chunk", functools.partial(compressor.decompress,
                                                                      out=out[start: start + count]),
                       gathered[at: at + sizes[j]], chunk_ctx)
    return out
