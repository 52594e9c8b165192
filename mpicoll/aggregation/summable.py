"""Summable compressors (fp16, bf16, random-k, and ``none``): reduce the wire section itself.

Every rank's payload has the same layout, so the dense all-reduce algorithms run directly on the
summable section, in place, with :class:`~.wire.WireSum` as their op; the reduced payload then
decodes to the sum. Cost: the algorithm's cost on the *wire* bytes (fp16: half of float32;
random-k: ``k`` values).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ..collectives import auto
from ..collectives.registry import get_algorithm, register
from ..compression import Compressor
from ..transport import Comm
from .path import Parts, Path, Prepared
from .wire import WireSum

DENSE = ("ring", "tree", "recursive_doubling", "rabenseifner")


def dense_algorithm(nbytes: int, size: int) -> str:
    """The all-reduce table's choice for ``nbytes`` on ``size`` ranks among :data:`DENSE` (our own
    algorithms, whose results are bitwise identical on every rank), else ``ring``."""
    name = auto.choose("allreduce", nbytes, size)
    return name if name in DENSE else "ring"


class SummablePath(Path):
    """The dense ``algorithm`` run on the summable section of the payloads."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm

    def prepare(self, comm: Comm, x: Any, compressor: Compressor, key: Hashable, parts: Parts = None) -> Prepared:
        payload, ctx = compressor.compress(x, key)
        section, encoding = compressor.summable_section(payload, ctx)
        return Prepared(compressor, ctx, payload=payload, parts=(section, encoding))

    def run(self, comm: Comm, prepared: Prepared) -> Any:
        section, encoding = prepared.parts
        if section.size:
            get_algorithm("allreduce", self.algorithm)(comm, section, section, WireSum(encoding, prepared.ctx.dtype))
        return prepared.compressor.decompress(prepared.payload, prepared.ctx)


for _name in DENSE:
    register("compressed_allreduce", _name)(SummablePath(_name))
