"""Uneven inputs: a rank that ran out of batches shadows the others' rounds until all are done.

Every round of :class:`~mpicoll.torch.DistributedOptimizer` starts with the gradient buckets (on
the progress engine's communicator) and ends with a small agreement (on a communicator of its
own) in which each rank says whether it still trains. A rank that has joined asks first: it
contributes "not training" to the agreement; if some rank still trains, it then starts the same
buckets with zeros, so the others' all-reduces complete, and asks again. When the agreement
says nobody trains any more, every rank leaves. The two communicators are independent, so the
joined rank's order (agreement, then buckets) meets the training ranks' order (buckets, then
agreement) without a deadlock; this needs the background engine (``MPI_THREAD_MULTIPLE``).

Joined ranks do not step. At the end the ranks compare how many steps each took: if they
differ, the lowest rank that took the most broadcasts its parameters and optimizer state
(momentum, learning rates) to all, so every rank leaves with the same model. Error-feedback
residuals stay each rank's own.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from ..errors import UnsupportedError
from .broadcast import broadcast_optimizer_state, broadcast_parameters


def _check_engine() -> None:
    from mpi4py import MPI

    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
        raise UnsupportedError("DistributedOptimizer.join needs MPI_THREAD_MULTIPLE (mpi4py's default): without "
                               "the background engine a joined rank cannot answer the others' all-reduces")


def shadow(optimizer: Any) -> int:
    """Take part, with zeros, in the others' rounds until no rank trains; then make every rank's
    parameters and optimizer state those of the rank that stepped most. Returns that rank."""
    _check_engine()
    if optimizer._pending:  # a short accumulation this rank still had: it counts as training
        optimizer._round()
    while optimizer._shadow_round():
        pass
    steps = optimizer._agreement.allgather(optimizer.steps)
    root = steps.index(max(steps))
    if min(steps) != max(steps):
        comm = optimizer._agreement.comm
        broadcast_parameters([p for _, p in optimizer._named], root, comm=comm)
        broadcast_optimizer_state(optimizer, root, comm=comm)
        optimizer.steps = max(steps)
    optimizer._synced = False
    return root


class Join:
    """``with optimizer.join():`` around this rank's loop over its batches (see
    :meth:`DistributedOptimizer.join`). ``last_rank`` is set when the block ends."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        self.last_rank: int | None = None

    def __enter__(self) -> Join:
        _check_engine()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:  # with an exception on its way, the abort hook ends the job instead
            self.last_rank = shadow(self.optimizer)
