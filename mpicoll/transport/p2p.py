"""Point-to-point primitives the algorithms are built from.

Buffers travel as raw bytes (``MPI.BYTE``): the algorithms do their own reductions in NumPy or
CuPy, so MPI never needs to know the element type (float16 included). GPU buffers are
synchronized before MPI reads them. Every wait in mpicoll goes through :func:`wait` /
:func:`waitall`, the single place where progress is driven.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mpi4py import MPI

from ..backend import synchronize
from .comm import Comm
from .watchdog import waiting_on


def isend(comm: Comm, buf: Any, dest: int, tag: int) -> MPI.Request:
    """Start sending the contiguous array ``buf`` to rank ``dest``."""
    synchronize(buf)
    return comm.mpi.Isend([buf, MPI.BYTE], dest, tag)


def irecv(comm: Comm, buf: Any, source: int, tag: int) -> MPI.Request:
    """Start receiving into the contiguous array ``buf`` from rank ``source``."""
    return comm.mpi.Irecv([buf, MPI.BYTE], source, tag)


def wait(request: MPI.Request, peer: int | None = None, step: str = "") -> None:
    """Block until ``request`` completes (``peer`` and ``step`` tell the watchdog what we wait for)."""
    waiting_on(peer, step)
    request.Wait()


def waitall(requests: Sequence[MPI.Request], peer: int | None = None, step: str = "") -> None:
    """Block until every request completes."""
    if requests:
        waiting_on(peer, step)
        MPI.Request.Waitall(list(requests))


def sendrecv(comm: Comm, sendbuf: Any, dest: int, recvbuf: Any, source: int, tag: int) -> None:
    """Send ``sendbuf`` to ``dest`` while receiving ``recvbuf`` from ``source``; empty sides are skipped."""
    waiting_on(source if recvbuf.size else dest, "sendrecv")
    if sendbuf.size and recvbuf.size:
        synchronize(sendbuf)
        comm.mpi.Sendrecv([sendbuf, MPI.BYTE], dest, tag, [recvbuf, MPI.BYTE], source, tag)
    elif sendbuf.size:
        synchronize(sendbuf)
        comm.mpi.Send([sendbuf, MPI.BYTE], dest, tag)
    elif recvbuf.size:
        comm.mpi.Recv([recvbuf, MPI.BYTE], source, tag)
