"""The thresholds ``auto`` decides compressed all-reduce paths by, and the rules built on them.

One home for both users: :mod:`mpicoll.aggregation` acts on them (:mod:`~mpicoll.aggregation.choice`,
:mod:`~mpicoll.aggregation.sparse`), the cost model predicts what that will do
(:mod:`.predict`, :mod:`.costs`). The model sits below aggregation in the layers, so they live
here. Pure arithmetic: no MPI, no NumPy.
"""

from __future__ import annotations

ROUND_BYTES = 64 << 10
"""Bytes that cost as much as one extra message round: latency x bandwidth of the links measured
here (tens of microseconds at about 1-3 GB/s in shared memory; 200 Mbit/s with ~1 ms between
network namespaces gives a similar product), rounded to a power of two."""

DENSE_SWITCH = 0.25
"""``sparse_rd``: a merged vector with more nonzeros than this fraction of the dense element count
continues as a dense array (its (index, value) pairs would then cost more than the array)."""

SPARSE_ALLGATHER_MAX_RANKS = 4
"""``auto`` takes ``sparse_allgather`` up to this many ranks and ``sparse_rd`` beyond."""


def prefer_single_pass(payload_bytes: float, size: int) -> bool:
    """Whether ``auto`` takes ``allgather_decode`` rather than ``two_phase`` for quantized payloads.

    Rule (alpha-beta model): single pass saves one round and the second compression;
    it costs ``(p-1) c - 2 (p-1)/p c = (p-1)(p-2)/p c`` extra bytes received per rank. Take it when
    those extra bytes cost less than one round, i.e. always on ``p <= 2`` ranks (no extra bytes),
    and on more ranks while ``(p-1)(p-2)/p * payload_bytes <= ROUND_BYTES`` (a 1-bit payload of
    about 790 k / 350 k / 220 k elements on 3 / 4 / 5 ranks; int8 of 98 k / 44 k / 27 k).

    Args:
        payload_bytes: one rank's whole-array payload size (the codec's ``payload_nbytes``).
        size: the number of ranks.
    """
    if size <= 2:
        return True
    return (size - 1) * (size - 2) / size * payload_bytes <= ROUND_BYTES


def sparse_path(size: int) -> str:
    """The flat path ``auto`` takes for sparse payloads on ``size`` ranks: one allgather of every
    rank's pairs while few ranks receive them, SparCML's pairwise merges beyond."""
    return "sparse_allgather" if size <= SPARSE_ALLGATHER_MAX_RANKS else "sparse_rd"
