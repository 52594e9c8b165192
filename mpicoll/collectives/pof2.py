"""Folding a non-power-of-two rank count onto a power of two.

Recursive doubling and Rabenseifner pair ranks by flipping bits, which needs ``2^k`` ranks.
With ``p = 2^k + rem`` the first ``2*rem`` ranks fold pairwise before the main algorithm: each
even rank ``r < 2*rem`` hands its data to ``r+1`` and sits out, and gets the result back at the
end. (The approach of MPICH and Thakur, Rabenseifner & Gropp, 2005.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..transport import Comm
from .ops import ReduceOp
from .pipeline import exchange, exchange_combine


@dataclass(frozen=True)
class Pof2:
    """The power-of-two group: ``newrank`` is this rank's index in it, or -1 if it sits out."""

    pof2: int
    rem: int
    newrank: int
    #: recursive-doubling rounds of a group member: (real partner rank, partner's data goes first)
    partners: tuple[tuple[int, bool], ...] = ()

    @classmethod
    def of(cls, comm: Comm) -> Pof2:
        """This rank's place in the power-of-two group (memoized on the communicator)."""
        group = comm.cache.get("pof2")
        if group is None:
            group = comm.cache["pof2"] = cls._compute(comm)
        return group

    @classmethod
    def _compute(cls, comm: Comm) -> Pof2:
        pof2 = 1 << (comm.size.bit_length() - 1)
        rem = comm.size - pof2
        r = comm.rank
        if r < 2 * rem:
            newrank = r // 2 if r % 2 else -1
        else:
            newrank = r - rem
        group = cls(pof2, rem, newrank)
        if newrank < 0:
            return group
        rounds, mask = [], 1
        while mask < pof2:
            partner = newrank ^ mask
            rounds.append((group.real(partner), partner < newrank))
            mask <<= 1
        return cls(pof2, rem, newrank, tuple(rounds))

    def real(self, newrank: int) -> int:
        """The real rank of group member ``newrank``."""
        return 2 * newrank + 1 if newrank < self.rem else newrank + self.rem


def fold_in(comm: Comm, group: Pof2, buf: Any, op: ReduceOp, tag: int) -> None:
    """Even ranks below ``2*rem`` send ``buf`` to ``r+1``, which folds it in (lower rank first)."""
    r = comm.rank
    if r >= 2 * group.rem:
        return
    # A one-way exchange: the even rank sends, the odd one folds it in, r-1's data first.
    even = r % 2 == 0
    exchange_combine(comm, buf if even else buf[:0], buf[:0] if even else buf, r + 1 if even else r - 1,
                     op, peer_first=True, tag=tag)


def fold_out(comm: Comm, group: Pof2, buf: Any, tag: int) -> None:
    """Odd ranks below ``2*rem`` return the finished result to ``r-1`` (in pipeline segments)."""
    r = comm.rank
    if r >= 2 * group.rem:
        return
    empty = buf[:0]
    if r % 2:
        exchange(comm, buf, empty, r - 1, tag)
    else:
        exchange(comm, empty, buf, r + 1, tag)
