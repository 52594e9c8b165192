"""How buffers are split: per-rank blocks (counts and displacements) and pipeline segments."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ArgumentError


def even_counts(count: int, parts: int) -> list[int]:
    """Split ``count`` elements into ``parts`` blocks whose sizes differ by at most one.

    The first ``count % parts`` blocks get the extra element, as ``MPI_Reduce_scatter`` users
    usually do.
    """
    base, extra = divmod(int(count), int(parts))
    return [base + (1 if i < extra else 0) for i in range(parts)]


def displacements(counts: Sequence[int]) -> list[int]:
    """Exclusive prefix sum of ``counts``: where each block starts."""
    displs, total = [], 0
    for c in counts:
        displs.append(total)
        total += int(c)
    return displs


def check_counts(counts: Sequence[int] | None, size: int, where: str) -> list[int] | None:
    """Validate a user ``counts=`` argument: ``size`` non-negative integers (or ``None``)."""
    if counts is None:
        return None
    array = np.asarray(counts).ravel()
    if array.size and array.dtype.kind not in "iu":
        raise ArgumentError(f"{where}: counts must be integers, got {array.dtype} values {array.tolist()[:8]}")
    values = [int(c) for c in array]
    if len(values) != size:
        raise ArgumentError(f"{where}: counts has {len(values)} entries but the communicator has "
                            f"{size} ranks; pass one count per rank")
    if any(c < 0 for c in values):
        raise ArgumentError(f"{where}: counts must be non-negative, got {values}")
    return values


def segments(count: int, segment_elems: int) -> list[tuple[int, int]]:
    """Split ``count`` elements into ``(start, stop)`` pieces of at most ``segment_elems`` elements each
    (elements per segment, as :func:`segment_elements` gives them; not a number of segments).

    Zero elements give no segment, so sender and receiver agree to send nothing.
    """
    step = max(1, int(segment_elems))
    return [(lo, min(lo + step, count)) for lo in range(0, count, step)]


def segment_elements(segment_bytes: int, itemsize: int) -> int:
    """How many elements of ``itemsize`` bytes one pipeline segment holds (at least one)."""
    return max(1, int(segment_bytes) // int(itemsize))
