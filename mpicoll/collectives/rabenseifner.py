"""Rabenseifner's all-reduce: recursive-halving reduce-scatter + recursive-doubling allgather.

The buffer is cut into ``2^k`` blocks. In the reduce-scatter each round halves the range of
blocks a rank is responsible for: it sends the half it gives up to its partner and folds the
partner's copy of the half it keeps into its own. After ``k`` rounds group member ``i`` owns the
finished block ``i``; the allgather doubles the owned range back up. ``2 log2 p`` rounds (two more
for a non-power-of-two rank count) moving ``2(p-1)/p * nbytes``: good for medium and large
messages when the latency of the ring's ``2(p-1)`` steps matters.

Both phases move pipeline segments (``config.segment_bytes``, up to ``pipeline_depth`` receives
in flight), as the ring does: the reduce-scatter folds each segment while the next ones arrive
(:func:`~.pipeline.exchange_combine`), the allgather and the fold-out copy them
(:func:`~.pipeline.exchange`). The last halving round and the first doubling round have the same
partner, so they run as one: each folded segment of the finished block goes back to the partner
at once, as the ring's two phases overlap. Other rounds follow one another. None of this changes
which values are combined in which order, so results stay bitwise identical on every rank.
"""

from __future__ import annotations

from typing import Any

from ..transport import Comm
from .ops import ReduceOp
from .partition import displacements, even_counts
from .pipeline import exchange, exchange_combine
from .pof2 import Pof2, fold_in, fold_out
from .registry import register


def _span(displs: list[int], lo: int, hi: int) -> slice:
    """The elements of blocks ``lo .. hi-1``."""
    return slice(displs[lo], displs[hi])


@register("allreduce", "rabenseifner")
def rabenseifner_allreduce(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp) -> None:
    """Rabenseifner all-reduce (recursive halving, then recursive doubling)."""
    if recvbuf is not sendbuf:
        recvbuf[...] = sendbuf
    if comm.size == 1:
        return
    tag = comm.new_tag()
    group = Pof2.of(comm)
    fold_in(comm, group, recvbuf, op, tag)
    if group.newrank >= 0:
        me = group.newrank
        displs = [*displacements(even_counts(recvbuf.size, group.pof2)), recvbuf.size]
        lo, hi = 0, group.pof2
        mask = group.pof2 >> 1
        while mask:  # recursive halving: keep the half named by my bit
            partner = me ^ mask
            mid = (lo + hi) // 2
            keep, give = ((mid, hi), (lo, mid)) if me & mask else ((lo, mid), (mid, hi))
            # the last halving round and the first doubling round have the same partner: fused,
            # each finished segment goes back while the next ones are folded
            exchange_combine(comm, recvbuf[_span(displs, *give)], recvbuf[_span(displs, *keep)],
                             group.real(partner), op, peer_first=partner < me, tag=tag, send_back=mask == 1)
            if mask > 1:
                lo, hi = keep
            mask >>= 1
        mask = 2  # the fused round left this rank both finished blocks of its pair
        while mask < group.pof2:  # recursive doubling: swap owned ranges
            partner = me ^ mask
            theirs = (lo ^ mask, (lo ^ mask) + mask)  # my range is mask blocks, aligned
            exchange(comm, recvbuf[_span(displs, lo, hi)], recvbuf[_span(displs, *theirs)],
                     group.real(partner), tag)
            lo, hi = min(lo, theirs[0]), max(hi, theirs[1])
            mask <<= 1
    fold_out(comm, group, recvbuf, tag)
