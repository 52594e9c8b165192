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
same phase-2 payloads, so all end with the same bits.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from ..collectives.api import allgather
from ..collectives.partition import displacements, even_counts
from ..collectives.registry import register
from ..compression import Compressor, Ctx
from ..transport import Comm
from .path import Parts, Path, Prepared


def _compress_chunks(compressor: Compressor, flat: Any, counts: list[int], key: Hashable) -> tuple[list, list]:
    payloads, ctxs = [], []
    for j, (start, count) in enumerate(zip(displacements(counts), counts, strict=True)):
        payload, ctx = compressor.compress(flat[start: start + count], key=(key, "chunk", j))
        payloads.append(payload)
        ctxs.append(ctx)
    return payloads, ctxs


def _alltoall_bytes(comm: Comm, payloads: list[Any]) -> list[Any]:
    """Send ``payloads[j]`` to rank ``j``; return what every rank sent us, in rank order."""
    send_sizes = np.array([p.size for p in payloads], dtype=np.int64)
    recv_sizes = np.empty(comm.size, dtype=np.int64)
    comm.mpi.Alltoall(send_sizes, recv_sizes)
    sendbuf = np.concatenate(payloads) if payloads else np.empty(0, np.uint8)
    recvbuf = np.empty(int(recv_sizes.sum()), dtype=np.uint8)
    from mpi4py import MPI

    comm.mpi.Alltoallv([sendbuf, (send_sizes, displacements(send_sizes)), MPI.BYTE],
                       [recvbuf, (recv_sizes, displacements(recv_sizes)), MPI.BYTE])
    starts = displacements(recv_sizes)
    return [recvbuf[s: s + n] for s, n in zip(starts, recv_sizes, strict=True)]


class TwoPhase(Path):
    """Compressed reduce-scatter to chunk owners, re-compression, compressed allgather."""

    def prepare(self, comm: Comm, x: Any, compressor: Compressor, key: Hashable, parts: Parts = None) -> Prepared:
        flat = np.ascontiguousarray(x).reshape(-1)
        counts = even_counts(flat.size, comm.size)
        payloads, chunk_ctxs = _compress_chunks(compressor, flat, counts, key)
        return Prepared(compressor, chunk_ctxs[comm.rank], payload=payloads, parts=(x.shape, x.dtype, counts, key))

    def run(self, comm: Comm, prepared: Prepared) -> Any:
        shape, dtype, counts, key = prepared.parts
        total = _owner_sum(comm, prepared, prepared.payload, prepared.ctx)
        return _owner_allgather(comm, prepared, total.astype(dtype, copy=False), counts, key).reshape(shape)


register("compressed_allreduce", "two_phase")(TwoPhase())


def _owner_sum(comm: Comm, prepared: Prepared, payloads: list[Any], mine: Ctx) -> Any:
    """Phases 1-2: send chunk j to rank j; add the p copies of our chunk, in rank order (float32)."""
    received = _alltoall_bytes(comm, payloads)
    total = np.zeros(mine.numel, dtype=np.float32)
    for rank, theirs in enumerate(received):  # rank order: the same additions on every rank
        decoded = prepared.decode(f"rank {rank}'s chunk {comm.rank}", prepared.compressor.decompress, theirs, mine)
        if decoded is not None:
            total += decoded.astype(np.float32, copy=False)
    return total


def _owner_allgather(comm: Comm, prepared: Prepared, total: Any, counts: list[int], key: Hashable) -> Any:
    """Phases 3-4: compress the owned chunk again, allgather the owners' payloads, decode all."""
    compressor = prepared.compressor
    # ErrorFeedback keeps an owner-side residual under this key
    owner_payload, owner = compressor.compress(total, key=(key, "owner"))
    sizes = allgather(np.array([owner_payload.size], dtype=np.int64), comm=comm).reshape(-1)
    gathered = allgather(owner_payload, counts=sizes, comm=comm)
    out = np.zeros(sum(counts), dtype=total.dtype)
    for j, (start, count, at) in enumerate(zip(displacements(counts), counts, displacements(sizes), strict=True)):
        chunk_ctx = Ctx((count,), total.dtype, owner.key, owner.step, owner.device)  # the same step on every rank
        decoded = prepared.decode(f"rank {j}'s reduced chunk", compressor.decompress, gathered[at: at + sizes[j]],
                                  chunk_ctx)
        if decoded is not None:
            out[start: start + count] = decoded
    return out
