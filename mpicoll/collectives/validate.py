"""Cross-rank argument checks: do all ranks call the same collective with the same arguments?

A mismatch (one rank passes 1000 elements, another 999; float32 against float64; different
roots) would otherwise hang or corrupt memory. With ``config.validate`` on (the default) every
collective first exchanges a small signature with one ``MPI_Allgather`` of a few int64s and,
if any field differs, raises the same :class:`~mpicoll.errors.MismatchError` on every rank,
naming the ranks and their values. Set ``MPICOLL_VALIDATE=0`` to skip the check once the
program is known to be correct: it costs one small collective (tens of microseconds) per call.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import MismatchError
from ..transport import Comm
from .ops import op_names
from .registry import COLLECTIVES, algorithm_names

_DTYPES = [np.dtype(t) for t in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
)]
_FIELDS = ("collective", "count", "dtype", "op", "root", "algorithm", "counts")
_COLLECTIVE_CODES = {name: i for i, name in enumerate(COLLECTIVES)}
_OP_CODES = {name: i for i, name in enumerate(op_names())}
_DTYPE_CODES = {dtype: i for i, dtype in enumerate(_DTYPES)}


def _dtype_code(dtype: np.dtype) -> int:
    code = _DTYPE_CODES.get(dtype)
    if code is None:  # an exotic dtype: compare by its itemsize-qualified name
        code = 1000 + zlib.crc32(dtype.str.encode()) % 1000000
    return code


def _counts_code(counts: Sequence[int] | None) -> int:
    if counts is None:
        return -1
    return zlib.crc32(np.asarray(counts, dtype=np.int64).tobytes())


def _describe(field: str, collective: str, code: int) -> str:
    if field == "collective":
        return COLLECTIVES[code] if 0 <= code < len(COLLECTIVES) else str(code)
    if field == "dtype":
        return str(_DTYPES[code]) if 0 <= code < len(_DTYPES) else f"non-standard dtype #{code}"
    if field == "op":
        names = op_names()
        return names[code] if 0 <= code < len(names) else "(none)"
    if field == "algorithm":
        names = algorithm_names(collective)
        return names[code] if 0 <= code < len(names) else str(code)
    if field == "counts":
        return "(none)" if code == -1 else f"list with checksum {code:#x}"
    return str(code)


def check_same_arguments(comm: Comm, collective: str, *, count: int, dtype: Any, algorithm: str,
                         op: str | None = None, root: int = -1, counts: Sequence[int] | None = None) -> None:
    """Raise :class:`MismatchError` on every rank unless all ranks passed the same arguments.

    Collective: every rank must call it. ``count`` is this rank's element count (for
    variable-count calls pass ``-1`` and the ``counts`` list instead).
    """
    signature = np.array([
        _COLLECTIVE_CODES[collective],
        count,
        _dtype_code(np.dtype(dtype)),
        _OP_CODES.get(op, -1),
        root,
        algorithm_names(collective).index(algorithm),
        _counts_code(counts),
    ], dtype=np.int64)
    table = comm.scratch.get("validate.table", comm.size * signature.size, np.int64).reshape(comm.size, -1)
    comm.mpi.Allgather(signature, table)
    if (table == signature).all():  # the common case: one vectorized comparison
        return
    differing = [i for i in range(signature.size) if not (table[:, i] == table[0, i]).all()]
    raise _mismatch(collective, table.copy(), differing[0])


def _rank_list(ranks: list[int]) -> str:
    """``[0, 2, 3, 4]`` -> ``"ranks 0, 2-4"``."""
    runs: list[list[int]] = []
    for r in ranks:
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return ("rank " if len(ranks) == 1 else "ranks ") + text


def _mismatch(collective: str, table: np.ndarray, column: int) -> MismatchError:
    """The same error, word for word, on every rank (so logs of all ranks agree)."""
    field = _FIELDS[column]
    values = {rank: _describe(field, collective, int(code)) for rank, code in enumerate(table[:, column])}
    groups: dict[str, list[int]] = {}
    for rank, value in values.items():
        groups.setdefault(value, []).append(rank)
    listing = "; ".join(f"{_rank_list(ranks)}: {value}" for value, ranks in groups.items())
    if field == "collective":
        message = (f"ranks called different collectives at the same point: {listing}. Every rank must call "
                   f"the same collectives in the same order.")
    else:
        message = (f"{collective}: ranks passed different {field}: {listing}. Every rank must call {collective} "
                   f"with the same count, dtype, op, root and algorithm (check the arrays and arguments on "
                   f"the ranks named).")
    message += " Set MPICOLL_VALIDATE=0 to skip this check."
    return MismatchError(message, field=field, values=values)
