"""Summable compressors (fp16, bf16, random-k, and ``none``): reduce the wire section itself.

Every rank's payload has the same layout, so the dense all-reduce algorithms run directly on the
summable section, in place; the reduced payload then decodes to the sum. Cost: the algorithm's
cost on the *wire* bytes (fp16: half of float32; random-k: ``k`` values).

- 16-bit wire floats (fp16, bf16) are added with :class:`~.wire.WireSum` (decoded, added in
  float32, encoded again at every step). fp16 overflows above 65504, so when averaging, each
  rank's contribution is first divided by the largest power of two ``2^k <= p`` (exact, unlike
  torch's fp16 hook, which divides by ``p``): partial sums stay below twice the largest input,
  and the rest of the division, ``p / 2^k``, happens in float32 after decoding.
- Plain values (``none``, random-k) are reduced exactly as :func:`mpicoll.allreduce` reduces them
  (float16 carried in float32, divided before the single rounding), so ``none`` gives the same
  bits as :func:`mpicoll.allreduce` with the same algorithm.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from ..collectives.internal import OWN_FLAT, get_algorithm, get_op, register
from ..compression import Compressor
from ..transport import Comm
from .path import GuardedOp, Parts, Path, Prepared, acc_dtype
from .wire import WireSum


class SummablePath(Path):
    """The dense ``algorithm`` run on the summable section of the payloads."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm

    def prepare(self, comm: Comm, x: Any, compressor: Compressor, key: Hashable, parts: Parts = None,
                average: bool = False) -> Prepared:
        prescale = 1 << (comm.size.bit_length() - 1) if average and compressor.narrow_range else 1
        if prescale > 1:  # exact: the partial sums stay in the wire's range
            x = x.astype(acc_dtype(x.dtype)) / acc_dtype(x.dtype).type(prescale)
        payload, ctx = compressor.compress(x, key)
        section, encoding = compressor.summable_section(payload, ctx)
        return Prepared(compressor, ctx, payload=payload, state=(section, encoding, prescale), average=average,
                        stream=compressor.stream(ctx))

    def run(self, comm: Comm, prepared: Prepared) -> Any:
        section, encoding, prescale = prepared.state
        algorithm = get_algorithm("allreduce", self.algorithm)
        if encoding == "values":
            work = section.astype(np.float32) if section.dtype == np.float16 else section
            if work.size:
                algorithm(comm, work, work, GuardedOp(get_op("sum"), prepared))
            section[...] = prepared.mean(work, comm.size)  # float16: rounded once, after the division
            return prepared.guard("the reduced payload", prepared.compressor.decompress, prepared.payload,
                                  prepared.ctx)
        wire = WireSum(encoding)
        if section.size:
            algorithm(comm, section, section, GuardedOp(wire, prepared))
        total = wire.decode(section).reshape(prepared.ctx.shape)  # float32
        if prepared.average:  # p / 2^k is exact in float32: one rounding, as dividing the sum by p
            total /= np.float32(comm.size / prescale)
        return total


for _name in OWN_FLAT:
    register("compressed_allreduce", _name)(SummablePath(_name))
