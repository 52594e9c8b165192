"""The MPI library's own collectives: the baseline every other algorithm is measured against."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mpi4py import MPI

from ..backend import synchronize
from ..transport import Comm
from .ops import ReduceOp
from .partition import displacements
from .registry import register


@register("allreduce", "native")
def native_allreduce(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp) -> None:
    """``MPI_Allreduce``, in place when ``recvbuf`` is ``sendbuf``."""
    synchronize(sendbuf)
    comm.mpi.Allreduce(MPI.IN_PLACE if recvbuf is sendbuf else sendbuf, recvbuf, op.mpi_op())


@register("reduce_scatter", "native")
def native_reduce_scatter(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp, counts: Sequence[int]) -> None:
    """``MPI_Reduce_scatter`` with per-rank counts."""
    synchronize(sendbuf)
    comm.mpi.Reduce_scatter(sendbuf, recvbuf, list(counts), op.mpi_op())


@register("allgather", "native")
def native_allgather(comm: Comm, sendbuf: Any, recvbuf: Any, counts: Sequence[int]) -> None:
    """``MPI_Allgatherv`` on raw bytes (any dtype)."""
    synchronize(sendbuf)
    item = recvbuf.dtype.itemsize
    byte_counts = [c * item for c in counts]
    comm.mpi.Allgatherv([sendbuf, MPI.BYTE], [recvbuf, byte_counts, displacements(byte_counts), MPI.BYTE])


@register("broadcast", "native")
def native_broadcast(comm: Comm, buf: Any, root: int) -> None:
    """``MPI_Bcast`` on raw bytes (any dtype), in place."""
    synchronize(buf)
    comm.mpi.Bcast([buf, MPI.BYTE], root)


@register("reduce", "native")
def native_reduce(comm: Comm, sendbuf: Any, recvbuf: Any | None, op: ReduceOp, root: int) -> None:
    """``MPI_Reduce``; ``recvbuf`` is significant at ``root`` only."""
    synchronize(sendbuf)
    at_root = comm.rank == root
    send = MPI.IN_PLACE if at_root and recvbuf is sendbuf else sendbuf
    comm.mpi.Reduce(send, recvbuf if at_root else None, op.mpi_op(), root)
