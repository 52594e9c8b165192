"""Inputs whose reductions are exact in any order, so ``#wrong`` is 0 for every correct algorithm.

Values are small integers (any summation order gives the same float), products stay within
``2^p``, and the expected answer is computed in float64 from every rank's input.
"""

from __future__ import annotations

import numpy as np

from mpicoll.collectives.internal import get_op, work_dtype


def values(count: int, rank: int, op: str, dtype: np.dtype) -> np.ndarray:
    """Rank ``rank``'s input of ``count`` elements for reduction ``op``."""
    i = np.arange(count, dtype=np.int64) + 3 * rank
    if op == "prod":
        v = np.where(i % 7 == 0, 2, np.where(i % 3 == 0, -1, 1))
    else:
        v = i % 11 - 5
    return v.astype(dtype)


def expected(count: int, nranks: int, op: str, dtype: np.dtype) -> np.ndarray:
    """The reduction of every rank's :func:`values`, as the collective must return it."""
    rop = get_op(op)
    acc = values(count, 0, op, np.dtype(np.float64))
    for rank in range(1, nranks):
        rop.combine(acc, values(count, rank, op, np.dtype(np.float64)), out=acc)
    if rop.average:
        work = acc.astype(work_dtype(np.dtype(dtype)))
        return (work / work.dtype.type(nranks)).astype(dtype)
    return acc.astype(dtype)


def poison(result: np.ndarray | None) -> None:
    """Fill a result buffer with values no correct answer contains (NaN, or the smallest integer),
    so that an algorithm which never writes its output cannot pass the check."""
    if result is not None:
        result[...] = np.nan if result.dtype.kind == "f" else np.iinfo(result.dtype).min


def count_wrong(result: np.ndarray | None, want: np.ndarray | None) -> int:
    """Elements of ``result`` that differ from ``want`` (0 where this rank holds no result)."""
    if result is None or want is None:
        return 0
    return int(np.count_nonzero(result.reshape(-1) != want.reshape(-1)))
