"""The MPI library's own collectives: the baseline every other algorithm is measured against.

GPU buffers that MPI may not touch (see :mod:`mpicoll.transport.staging`) go through pinned host
copies as a whole: MPI's blocking collectives offer no segment to overlap the copies with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mpi4py import MPI

from ..backend import synchronize
from ..transport import Comm
from ..transport.staging import needs_staging, stager_of
from ..transport.watchdog import waiting_on
from .ops import ReduceOp
from .partition import displacements
from .registry import register


def _staged(comm: Comm, sendbuf: Any, recvbuf: Any | None, call: Callable[[Any, Any], None]) -> bool:
    """If the buffers must be staged: run ``call(host_send, host_recv)`` on pinned host copies (the
    very same array when in place, so ``recv is send`` still tells), queue the result's copy back
    to the device, and return True. The host buffers go back to the pool whatever happens."""
    if not needs_staging(sendbuf):
        return False
    stager = stager_of(comm)
    send = stager.host_copy(sendbuf)
    in_place = recvbuf is sendbuf
    recv = None if recvbuf is None or in_place else stager.pool.acquire(recvbuf.nbytes)
    done = False
    try:
        send_view = send.view(sendbuf.dtype)
        call(send_view, None if recvbuf is None else send_view if in_place else recv.view(recvbuf.dtype))
        done = True
    finally:
        result = send if in_place else recv
        if done and result is not None:
            stager.copy_back(result, recvbuf)
        elif result is not None:
            stager.release(result)
        if not in_place:
            stager.release(send)
    return True


@register("allreduce", "native")
def native_allreduce(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp) -> None:
    """``MPI_Allreduce``, in place when ``recvbuf`` is ``sendbuf``."""
    waiting_on(None, "MPI's own collective")
    if _staged(comm, sendbuf, recvbuf, lambda s, r: comm.mpi.Allreduce(MPI.IN_PLACE if r is s else s, r,
                                                                          op.mpi_op())):
        return
    synchronize(sendbuf)
    comm.mpi.Allreduce(MPI.IN_PLACE if recvbuf is sendbuf else sendbuf, recvbuf, op.mpi_op())


@register("reduce_scatter", "native")
def native_reduce_scatter(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp, counts: Sequence[int]) -> None:
    """``MPI_Reduce_scatter`` with per-rank counts."""
    waiting_on(None, "MPI's own collective")
    if _staged(comm, sendbuf, recvbuf, lambda s, r: comm.mpi.Reduce_scatter(s, r, list(counts), op.mpi_op())):
        return
    synchronize(sendbuf)
    comm.mpi.Reduce_scatter(sendbuf, recvbuf, list(counts), op.mpi_op())


@register("allgather", "native")
def native_allgather(comm: Comm, sendbuf: Any, recvbuf: Any, counts: Sequence[int]) -> None:
    """``MPI_Allgatherv`` on raw bytes (any dtype)."""
    waiting_on(None, "MPI's own collective")
    item = recvbuf.dtype.itemsize
    byte_counts = [c * item for c in counts]

    def call(send: Any, recv: Any) -> None:
        comm.mpi.Allgatherv([send, MPI.BYTE], [recv, byte_counts, displacements(byte_counts), MPI.BYTE])

    if not _staged(comm, sendbuf, recvbuf, call):
        synchronize(sendbuf)
        call(sendbuf, recvbuf)


@register("broadcast", "native")
def native_broadcast(comm: Comm, buf: Any, root: int) -> None:
    """``MPI_Bcast`` on raw bytes (any dtype), in place."""
    waiting_on(None, "MPI's own collective")
    if _staged(comm, buf, buf, lambda s, _: comm.mpi.Bcast([s, MPI.BYTE], root)):
        return
    synchronize(buf)
    comm.mpi.Bcast([buf, MPI.BYTE], root)


@register("reduce", "native")
def native_reduce(comm: Comm, sendbuf: Any, recvbuf: Any | None, op: ReduceOp, root: int) -> None:
    """``MPI_Reduce``; ``recvbuf`` is significant at ``root`` only."""
    waiting_on(None, "MPI's own collective")
    at_root = comm.rank == root

    def call(send: Any, recv: Any) -> None:
        comm.mpi.Reduce(MPI.IN_PLACE if at_root and recv is send else send, recv, op.mpi_op(), root)

    if not _staged(comm, sendbuf, recvbuf if at_root else None, call):
        synchronize(sendbuf)
        call(sendbuf, recvbuf if at_root else None)


@register("alltoall", "native")
def native_alltoall(comm: Comm, sendbuf: Any, sendcounts: Sequence[int], recvbuf: Any,
                    recvcounts: Sequence[int]) -> None:
    """``MPI_Alltoallv`` on raw bytes (any dtype)."""
    item = sendbuf.dtype.itemsize
    send_bytes = [c * item for c in sendcounts]
    recv_bytes = [c * item for c in recvcounts]

    def call(send: Any, recv: Any) -> None:
        comm.mpi.Alltoallv([send, send_bytes, displacements(send_bytes), MPI.BYTE],
                           [recv, recv_bytes, displacements(recv_bytes), MPI.BYTE])

    if not _staged(comm, sendbuf, recvbuf, call):
        synchronize(sendbuf)
        call(sendbuf, recvbuf)
