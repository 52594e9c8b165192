"""``allgather_decode``: the single-pass compressed all-reduce, for any codec (quantized above all).

Every rank compresses its whole array once; the payloads are allgathered (sizes first), and every
rank decodes all ``p`` of them and adds them **in rank order** (float32, float64 for float64
arrays), so every rank computes the same additions and ends with the same bits. Nothing is
compressed a second time: the only loss is each rank's own compression, which an
:class:`~mpicoll.compression.ErrorFeedback` wrapper (one residual, under ``key``) keeps for the
next step. Two-phase (:mod:`.two_phase`) re-compresses the chunk owners' sums, which loses
accuracy (EF-sign under momentum: several points on digits) in exchange for fewer bytes.

Cost per rank: one allgather round (the 8-byte sizes ride on the call's agreement); receives ``(p-1) c`` bytes for a
payload of ``c`` bytes, against ``2 (p-1)/p c`` and two rounds for two-phase, and decodes ``p``
whole arrays. So it never moves more bytes than two-phase on two ranks, and ``p/2`` times as many
on ``p`` ranks. :func:`mpicoll.model.rules.prefer_single_pass` is the rule ``auto`` applies (see its docstring).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from ..collectives.internal import displacements, register
from ..compression import Compressor
from ..transport import Comm
from .path import Parts, Path, Prepared, acc_dtype, gather_payloads


class AllgatherDecode(Path):
    """Compress once, allgather every rank's payload, decode and add them in rank order."""

    def prepare(self, comm: Comm, x: Any, compressor: Compressor, key: Hashable, parts: Parts = None,
                average: bool = False) -> Prepared:
        payload, ctx = compressor.compress(x, key)
        return Prepared(compressor, ctx, payload=payload, average=average, announce=payload.size)

    def run(self, comm: Comm, prepared: Prepared) -> Any:
        ctx = prepared.ctx
        found = gather_payloads(comm, prepared)
        if found is None:  # recorded, on every rank alike
            return np.zeros(ctx.numel, dtype=acc_dtype(ctx.dtype)).reshape(ctx.shape)
        gathered, sizes = found
        return prepared.mean(decode_sum(prepared, gathered, sizes), comm.size)


def decode_sum(prepared: Prepared, gathered: Any, sizes: Any) -> Any:
    """Decode the ``p`` payloads packed in ``gathered`` (``sizes`` bytes each) and add them in rank
    order, in :func:`~.path.acc_dtype`; a malformed payload is recorded in ``prepared`` (every rank
    raises after the protocol) and counts as zeros."""
    labelled = [(f"rank {rank}'s payload", gathered[start: start + size])
                for rank, (start, size) in enumerate(zip(displacements(sizes), sizes, strict=True))]
    return prepared.sum_decoded(prepared.ctx, labelled).reshape(prepared.ctx.shape)


register("compressed_allreduce", "allgather_decode")(AllgatherDecode())
