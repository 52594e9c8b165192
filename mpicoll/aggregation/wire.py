"""Adding payloads in their wire format: the reduction op of the summable compressed path.

A summable payload section (fp16 or bf16 bits, or random-k values) can be reduced by the dense
algorithms of :mod:`mpicoll.collectives` if their op knows how to add two sections: decode both
to float32, add in float32, encode the sum back. Every partial sum that crosses the wire is in
the wire format, exactly as it must be; the arithmetic never happens in the narrow type.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from ..backend import device_of, xp_of
from ..errors import UnsupportedError


class WireSum:
    """``combine(a, b, out)`` for sections encoded as ``"fp16"``, ``"bf16"`` or plain ``"values"``."""

    name = "sum"

    def __init__(self, encoding: str, dtype: Any) -> None:
        self.encoding = encoding
        self.dtype = np.dtype(dtype)

    def _decode(self, a: Any) -> Any:
        if self.encoding == "values":
            return a.astype(np.float32) if self.dtype == np.float16 else a
        return kernels.get(f"{self.encoding}_decode", device_of(a))(a)

    def combine(self, a: Any, b: Any, out: Any) -> None:
        """``out = a + b`` in the wire format (out may alias a or b)."""
        if self.encoding == "values" and self.dtype != np.float16:
            xp_of(out).add(a, b, out=out)
            return
        total = self._decode(a) + self._decode(b)  # float32
        if self.encoding == "values":
            out[...] = total.astype(np.float16)
        else:
            kernels.get(f"{self.encoding}_encode", device_of(out))(total, out=out)

    def mpi_op(self) -> Any:
        raise UnsupportedError("MPI cannot add compressed payloads: use one of mpicoll's own algorithms "
                               "(ring, tree, recursive_doubling, rabenseifner) for summable compressors")
