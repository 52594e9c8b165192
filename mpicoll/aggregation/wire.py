"""Adding payloads in their wire format: the reduction op of the summable compressed path.

A summable payload section (fp16 or bf16 bits, or random-k values) can be reduced by the dense
algorithms of :mod:`mpicoll.collectives` if their op knows how to add two sections: decode both
to float32, add in float32, encode the sum back. Every partial sum that crosses the wire is in
the wire format, exactly as it must be; the arithmetic never happens in the narrow type.
"""

from __future__ import annotations

from typing import Any

from .. import kernels
from ..backend import device_of
from ..errors import UnsupportedError


class WireSum:
    """``combine(a, b, out)`` for sections of 16-bit wire floats, ``"fp16"`` or ``"bf16"`` bits.

    (Sections of plain values are reduced by the ordinary ``sum`` op, float16 in float32, exactly
    as :func:`mpicoll.allreduce` does: see :mod:`.summable`.)"""

    name = "sum"

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding

    def decode(self, a: Any) -> Any:
        """The float32 values of the wire section ``a``."""
        return kernels.get(f"{self.encoding}_decode", device_of(a))(a)

    def combine(self, a: Any, b: Any, out: Any) -> None:
        """``out = a + b`` in the wire format (out may alias a or b)."""
        kernels.get(f"{self.encoding}_encode", device_of(out))(self.decode(a) + self.decode(b), out=out)

    def mpi_op(self) -> Any:
        raise UnsupportedError("MPI cannot add compressed payloads: use one of mpicoll's own algorithms "
                               "(ring, tree, recursive_doubling, rabenseifner) for summable compressors")
