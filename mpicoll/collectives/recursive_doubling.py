"""Recursive-doubling all-reduce: ``log2 p`` pairwise exchanges of the whole buffer.

In round ``k`` each rank exchanges its partial result with the rank whose group index differs
in bit ``k`` and combines the two, lower group first, so both partners compute the same bits.
Latency-optimal (``log2 p`` message rounds; ``floor(log2 p) + 2`` for a non-power-of-two rank count),
but every round moves the full ``nbytes``: the algorithm for small messages.
"""

from __future__ import annotations

from typing import Any

from ..backend import xp_of
from ..config import config
from ..transport import Comm
from ..transport.p2p import sendrecv
from .ops import ReduceOp
from .pipeline import exchange_combine
from .pof2 import Pof2, fold_in, fold_out
from .registry import register


@register("allreduce", "recursive_doubling")
def recursive_doubling_allreduce(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp) -> None:
    """Recursive-doubling all-reduce; non-powers of two fold the extra ranks in and out."""
    if comm.size == 1:
        recvbuf[...] = sendbuf
        return
    tag = comm.new_tag()
    group = Pof2.of(comm)
    if group.rem == 0 and sendbuf.nbytes <= config.get("segment_bytes"):
        _small(comm, group, sendbuf, recvbuf, op, tag)
        return
    if recvbuf is not sendbuf:
        recvbuf[...] = sendbuf
    fold_in(comm, group, recvbuf, op, tag)
    if group.newrank >= 0:
        for partner, peer_first in group.partners:
            exchange_combine(comm, recvbuf, recvbuf, partner, op, peer_first=peer_first, tag=tag)
    fold_out(comm, group, recvbuf, tag)


def _small(comm: Comm, group: Pof2, sendbuf: Any, recvbuf: Any, op: ReduceOp, tag: int) -> None:
    """Power-of-two ranks, one segment: one blocking exchange per round, no pipeline bookkeeping.

    The first round reads ``sendbuf`` and writes ``recvbuf``, which saves the initial copy.
    """
    theirs = comm.scratch.get("rd.recv", sendbuf.size, sendbuf.dtype, xp_of(sendbuf))
    mine = sendbuf
    for partner, peer_first in group.partners:
        sendrecv(comm, mine, partner, theirs, partner, tag)
        if peer_first:
            op.combine(theirs, mine, out=recvbuf)
        else:
            op.combine(mine, theirs, out=recvbuf)
        mine = recvbuf
