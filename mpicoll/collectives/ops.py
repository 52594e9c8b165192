"""Reduction operations and the dtypes they accept.

A :class:`ReduceOp` combines two buffers element-wise with a NumPy ufunc (CuPy arrays dispatch
through ``__array_ufunc__``), knows its MPI counterpart for the ``native`` algorithm, and says how
a dtype is carried through a reduction (float16 accumulates in float32; ``avg`` is a sum divided
by the number of ranks once at the end).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DtypeError, UnsupportedError, accepted

#: dtypes the reducing collectives accept
REDUCE_DTYPES = tuple(np.dtype(t) for t in ("float16", "float32", "float64", "int32", "int64"))
_FLOATS = tuple(t for t in REDUCE_DTYPES if t.kind == "f")
_INTS = tuple(t for t in REDUCE_DTYPES if t.kind in "iu")


@dataclass(frozen=True)
class ReduceOp:
    """An element-wise reduction.

    Attributes:
        name: the public name (``"sum"``, ``"prod"``, ``"min"``, ``"max"``, ``"avg"``, and the
            bitwise ``"band"``, ``"bor"``, ``"bxor"``).
        ufunc: the binary ufunc that combines two partial results.
        mpi_name: the ``mpi4py.MPI`` attribute of the matching predefined op.
        average: divide the sum by the number of ranks at the end.
        dtypes: the dtypes this op accepts.
        bitwise: the op combines integer bits (and, or, xor).
    """

    name: str
    ufunc: np.ufunc
    mpi_name: str
    average: bool = False
    dtypes: tuple[np.dtype, ...] = REDUCE_DTYPES
    bitwise: bool = False

    def combine(self, a: Any, b: Any, out: Any) -> None:
        """``out = a (op) b`` element-wise; ``out`` may alias ``a`` or ``b``."""
        self.ufunc(a, b, out=out)

    def mpi_op(self) -> Any:
        """The predefined MPI op (imports mpi4py)."""
        from mpi4py import MPI

        return getattr(MPI, self.mpi_name)

    def check_dtype(self, dtype: Any, where: str) -> np.dtype:
        """Raise :class:`DtypeError` unless this op accepts ``dtype``; return it as ``np.dtype``."""
        dtype = np.dtype(dtype)
        if dtype not in self.dtypes:
            names = [str(t) for t in self.dtypes]
            hint = " (avg divides, so it needs a floating dtype: use op='sum' and divide)" if self.average else \
                " (bitwise ops work on integer bits: view the data as an integer dtype)" if self.bitwise else ""
            raise DtypeError(f"{where}: op={self.name!r} does not accept dtype {dtype}; accepted: "
                             f"{accepted(names)}{hint}")
        return dtype


_OPS = {
    op.name: op
    for op in (
        ReduceOp("sum", np.add, "SUM"),
        ReduceOp("prod", np.multiply, "PROD"),
        ReduceOp("min", np.minimum, "MIN"),
        ReduceOp("max", np.maximum, "MAX"),
        ReduceOp("avg", np.add, "SUM", average=True, dtypes=_FLOATS),
        ReduceOp("band", np.bitwise_and, "BAND", dtypes=_INTS, bitwise=True),
        ReduceOp("bor", np.bitwise_or, "BOR", dtypes=_INTS, bitwise=True),
        ReduceOp("bxor", np.bitwise_xor, "BXOR", dtypes=_INTS, bitwise=True),
    )
}


def get_op(op: str | ReduceOp) -> ReduceOp:
    """Look up a reduction by name (or pass a :class:`ReduceOp` through)."""
    if isinstance(op, ReduceOp):
        return op
    try:
        return _OPS[op]
    except (KeyError, TypeError):
        raise UnsupportedError(f"unsupported reduction op {op!r}; accepted: {accepted(list(_OPS))}") from None


def op_names() -> list[str]:
    """The names of every supported reduction op."""
    return list(_OPS)


def work_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a reduction runs in: float16 accumulates in float32, others as they are."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype
