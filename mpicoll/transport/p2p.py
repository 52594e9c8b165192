"""Point-to-point primitives the algorithms are built from.

Buffers travel as raw bytes (``MPI.BYTE``): the algorithms do their own reductions in NumPy or
CuPy, so MPI never needs to know the element type (float16 included). GPU buffers are
synchronized before MPI reads them. Every wait in mpicoll goes through :func:`wait` /
:func:`waitall`, the single place where progress is driven.

MPI libraries wait by spinning, which is right for a blocking call but wrong for a background
thread: a spinning progress engine takes a core from the compute it is meant to overlap. A
thread that calls :func:`patient_waits` (the non-blocking engine does) waits instead by testing
its requests with short sleeps that grow up to ``config.engine_poll_us``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from ..backend import synchronize
from ..config import config
from .comm import Comm
from .staging import StagedRequest, needs_staging, stager_of
from .watchdog import waited, waiting_on

Request = MPI.Request | StagedRequest


def isend(comm: Comm, buf: Any, dest: int, tag: int) -> Request:
    """Start sending the contiguous array ``buf`` to rank ``dest`` (GPU buffers staged if needed)."""
    if needs_staging(buf):
        return stager_of(comm).isend(comm.mpi, buf, dest, tag)
    synchronize(buf)
    return comm.mpi.Isend([buf, MPI.BYTE], dest, tag)


def irecv(comm: Comm, buf: Any, source: int, tag: int) -> Request:
    """Start receiving into the contiguous array ``buf`` from rank ``source``.

    The bytes are only guaranteed in ``buf`` after :func:`wait` / :func:`waitall` returns.
    """
    if needs_staging(buf):
        return stager_of(comm).irecv(comm.mpi, buf, source, tag)
    return comm.mpi.Irecv([buf, MPI.BYTE], source, tag)


class _Style(threading.local):
    """Per thread: whether waits poll. A class default, not ``getattr(local, name, False)``: a
    missing attribute of a ``threading.local`` costs a raised and caught AttributeError, about 1 us,
    paid per message."""

    patient = False


_style = _Style()
_SPINS = 16  # tests before the first sleep: short waits stay fast


def patient_waits(enabled: bool = True) -> None:
    """Make this thread's waits poll with growing sleeps instead of spinning inside MPI."""
    _style.patient = enabled


def is_patient() -> bool:
    """Whether this thread's waits poll (:func:`patient_waits`)."""
    return _style.patient


def _poll(requests: list[MPI.Request], status: MPI.Status | None = None) -> None:
    """Test ``requests`` with growing sleeps until all are done; ``status`` gets the first one's."""
    limit = config.get("engine_poll_us") * 1e-6
    tries, pause = 0, 1e-6
    statuses = None if status is None else [status] + [MPI.Status() for _ in requests[1:]]
    while not MPI.Request.Testall(requests, statuses):
        tries += 1
        if tries > _SPINS and limit > 0:
            time.sleep(pause)
            pause = min(2 * pause, limit)


def wait(request: Request, peer: int | None = None, step: str = "") -> None:
    """Block until ``request`` completes (``peer`` and ``step`` tell the watchdog what we wait for)."""
    waitall([request], peer, step)


def waitall(requests: Sequence[Request], peer: int | None = None, step: str = "") -> None:
    """Block until every request completes (and staged receives are on their way to the device)."""
    if not requests:
        return
    waiting_on(peer, step)
    plain = [r.request if isinstance(r, StagedRequest) else r for r in requests]
    if _style.patient:
        _poll(plain)
    else:
        MPI.Request.Waitall(plain)
    waited()
    for r in requests:
        if isinstance(r, StagedRequest):
            r.complete()


def sendrecv(comm: Comm, sendbuf: Any, dest: int, recvbuf: Any, source: int, tag: int) -> None:
    """Send ``sendbuf`` to ``dest`` while receiving ``recvbuf`` from ``source``; empty sides are skipped."""
    if _style.patient or needs_staging(sendbuf) or needs_staging(recvbuf):
        requests = [irecv(comm, recvbuf, source, tag)] if recvbuf.size else []
        requests += [isend(comm, sendbuf, dest, tag)] if sendbuf.size else []
        waitall(requests, source if recvbuf.size else dest, "sendrecv")
        return
    waiting_on(source if recvbuf.size else dest, "sendrecv")
    if sendbuf.size and recvbuf.size:
        synchronize(sendbuf)
        comm.mpi.Sendrecv([sendbuf, MPI.BYTE], dest, tag, [recvbuf, MPI.BYTE], source, tag)
    elif sendbuf.size:
        synchronize(sendbuf)
        comm.mpi.Send([sendbuf, MPI.BYTE], dest, tag)
    elif recvbuf.size:
        comm.mpi.Recv([recvbuf, MPI.BYTE], source, tag)
    waited()


def sendrecv_count(comm: Comm, sendbuf: Any, dest: int | None, recvbuf: Any, source: int | None, tag: int,
                   step: str = "sendrecv", status: MPI.Status | None = None) -> int:
    """Send the host array ``sendbuf`` (or an mpi4py message spec given as a list, e.g.
    ``[MPI.BOTTOM, 1, datatype]``) to ``dest`` while receiving into ``recvbuf`` from ``source`` a
    message of at most ``recvbuf.nbytes`` bytes; ``None`` skips a side (``step`` names the wait
    for the watchdog). A caller repeating the same exchange may pass ``recvbuf`` as a ready spec
    (``[array, MPI.BYTE]``) and a ``status`` to reuse: each saves an allocation per call.

    Returns:
        The number of bytes received (0 when ``source`` is None). A longer message is an MPI
        error (truncation), never an overflow.
    """
    status = MPI.Status() if status is None else status
    send = sendbuf if isinstance(sendbuf, list) else [sendbuf, MPI.BYTE]  # a list: an MPI message spec as is
    recv = recvbuf if isinstance(recvbuf, list) else [recvbuf, MPI.BYTE]
    if _style.patient:
        requests = [comm.mpi.Irecv(recv, source, tag)] if source is not None else []
        requests += [comm.mpi.Isend(send, dest, tag)] if dest is not None else []
        waiting_on(source if source is not None else dest, step)
        _poll(requests, status if source is not None else None)
        waited()
    elif dest is not None and source is not None:
        waiting_on(source, step)
        comm.mpi.Sendrecv(send, dest, tag, recv, source, tag, status)
        waited()
    elif dest is not None:
        waiting_on(dest, step)
        comm.mpi.Send(send, dest, tag)
        waited()
        return 0
    elif source is not None:
        waiting_on(source, step)
        comm.mpi.Recv(recv, source, tag, status)
        waited()
    return status.Get_count(MPI.BYTE) if source is not None else 0


def _probe(comm: Comm, source: int, tag: int) -> tuple[MPI.Message, MPI.Status]:
    status = MPI.Status()
    if not _style.patient:
        return comm.mpi.Mprobe(source, tag, status), status
    limit, tries, pause = config.get("engine_poll_us") * 1e-6, 0, 1e-6
    while (message := comm.mpi.Improbe(source, tag, status)) is None:
        tries += 1
        if tries > _SPINS and limit > 0:
            time.sleep(pause)
            pause = min(2 * pause, limit)
    return message, status


def sendrecv_bounded(comm: Comm, sendbuf: Any, dest: int | None, source: int | None, tag: int,
                     limit_bytes: int) -> Any:
    """Send the host array ``sendbuf`` to ``dest`` while receiving a message of a size the peer chose.

    The size is read from the message itself (``MPI_Mprobe``), never from what the peer announced,
    and a message longer than ``limit_bytes`` (the most the receiver can legitimately expect) is
    received into nothing and dropped instead of allocated. ``None`` for ``dest`` / ``source`` skips
    that side.

    Returns:
        The bytes received (a new uint8 array), ``None`` when the message was too long or nothing
        was received.
    """
    requests = [isend(comm, sendbuf, dest, tag)] if dest is not None else []
    received = None
    if source is not None:
        waiting_on(source, "sendrecv")
        message, status = _probe(comm, source, tag)
        waited()
        nbytes = status.Get_count(MPI.BYTE)
        if 0 <= nbytes <= limit_bytes:
            received = np.empty(nbytes, dtype=np.uint8)
            message.Recv([received, MPI.BYTE])
        else:
            with contextlib.suppress(MPI.Exception):  # consumes the message: MPI reports the truncation
                message.Recv([np.empty(0, dtype=np.uint8), MPI.BYTE])
    waitall(requests, dest, "sendrecv")
    return received
