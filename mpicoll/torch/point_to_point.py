"""send / recv / recv from any source for the mpicoll backend.

Messages travel on a communicator of their own (a ``Dup()`` made with the process group), so
torch's tags, whatever their values, never meet the tags of mpicoll's collectives, and
point-to-point traffic never waits behind the progress engine's queue: an ``irecv`` posted before
a collective completes whenever its message arrives, as with gloo.

Every call starts the MPI request at once and returns a :class:`RequestWork`. ``wait()`` drives
the request on the caller's thread; the first ``get_future()`` starts a small daemon thread that
drives it (polling with short sleeps, so it does not take a core) and completes the future; at
interpreter exit it gives up a message that never came, and is joined before finalization
(:mod:`~mpicoll.transport.teardown`: a thread cut off inside the future's completion aborts the process).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import torch
from mpi4py import MPI

from ..errors import ArgumentError, UnsupportedError
from ..transport import Comm, teardown
from ..transport.p2p import irecv, isend, patient_waits, waitall
from .buffers import Buffer, for_bytes
from .work import Work

#: the background waiter looks at :data:`~mpicoll.transport.teardown.exiting` this often (seconds)
_WAITER_SLICE_S = 0.1


class RequestWork(Work):
    """A started send or receive (see the module docstring)."""

    def __init__(self, description: str, request: Any, buffer: Buffer, status: Any = None) -> None:
        super().__init__(description)
        self._request, self._buffer, self._status = request, buffer, status
        self._lock = threading.Lock()
        self._waiter: threading.Thread | None = None

    def _drive(self, deadline: float | None = None) -> None:
        """Complete the request (by ``deadline``, a ``time.monotonic()`` value, if given)."""
        with self._lock:
            if self._done.is_set():
                return
            try:
                if not isinstance(self._request, MPI.Request) or (self._status is None and deadline is None):
                    waitall([self._request], None, self.description)  # GPU staging completes here too
                elif not self._poll(deadline):
                    return
            except BaseException as exc:  # the error belongs to whoever waits
                self._finish(error=exc)
                return
            self._complete()

    def _complete(self) -> None:
        """The request is through (lock held): copy back, note the source, complete the future."""
        try:
            self._buffer.finish()
        except BaseException as exc:
            self._finish(error=exc)
            return
        if self._status is not None:
            self._source = self._status.Get_source()
        self._finish([self._buffer.tensor])

    def _poll(self, deadline: float | None) -> bool:
        pause = 1e-6
        while not self._request.Test(self._status):
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(pause)
            pause = min(2 * pause, 2e-4)
        return True

    def wait(self, timeout: timedelta | None = None) -> bool:
        """Block until the message has been sent or received (see :meth:`Work.wait`)."""
        limited = timeout is not None and timeout > timedelta(0)
        self._drive(time.monotonic() + timeout.total_seconds() if limited else None)
        return super().wait(timeout)

    def get_future(self) -> torch.futures.Future[list[torch.Tensor]]:
        """A future completed (by a daemon thread) when the message is through."""
        with self._lock:
            if self._waiter is None and not self._done.is_set():
                self._waiter = threading.Thread(target=self._wait_in_background, daemon=True,
                                                name=f"mpicoll-{self.description}")
                self._waiter.start()
                teardown.end_before_exit(self._waiter, None, lambda: f"the background wait of {self.description}")
        return self._future

    def _wait_in_background(self) -> None:
        patient_waits()
        while not self._done.is_set() and not teardown.exiting.is_set():
            self._drive(time.monotonic() + _WAITER_SLICE_S)

    def is_completed(self) -> bool:
        """Whether the message is through; tests the request without blocking."""
        if not self._done.is_set() and isinstance(self._request, MPI.Request) and self._lock.acquire(blocking=False):
            try:
                if not self._done.is_set() and self._request.Test(self._status):
                    self._complete()
            finally:
                self._lock.release()
        return self._done.is_set()


def _check(comm: Comm, tensors: list[torch.Tensor], peer: int, tag: int, what: str) -> torch.Tensor:
    if len(tensors) != 1:
        raise ArgumentError(f"{what}: the mpicoll backend takes one tensor per call, got {len(tensors)}")
    if not 0 <= peer < comm.size:
        raise ArgumentError(f"{what}: peer rank {peer} is not a rank of this group of {comm.size}")
    if tag < 0:
        raise ArgumentError(f"{what}: tag {tag} is negative; MPI tags are 0 .. {comm.mpi.Get_attr(MPI.TAG_UB)}")
    return tensors[0]


def send(comm: Comm, tensors: list[torch.Tensor], dst: int, tag: int) -> RequestWork:
    """Start sending ``tensors[0]`` to group rank ``dst`` (its bytes; any dtype)."""
    buffer = for_bytes(_check(comm, tensors, dst, tag, "send"))
    return RequestWork("send", isend(comm, buffer.array, dst, tag), buffer)


def recv(comm: Comm, tensors: list[torch.Tensor], src: int, tag: int) -> RequestWork:
    """Start receiving into ``tensors[0]`` from group rank ``src``."""
    buffer = for_bytes(_check(comm, tensors, src, tag, "recv"), copy_in=False)
    work = RequestWork("recv", irecv(comm, buffer.array, src, tag), buffer)
    work._source = src
    return work


def recv_anysource(comm: Comm, tensors: list[torch.Tensor], tag: int) -> RequestWork:
    """Start receiving into ``tensors[0]`` from whichever rank sends first; ``source_rank()`` names it."""
    tensor = _check(comm, tensors, 0, tag, "recv")
    if tensor.is_cuda:
        raise UnsupportedError("recv from any source: the mpicoll backend receives CUDA tensors only from a "
                               "named rank; pass src=")
    buffer = for_bytes(tensor, copy_in=False)
    request = comm.mpi.Irecv([buffer.array, MPI.BYTE], MPI.ANY_SOURCE, tag)
    return RequestWork("recv", request, buffer, MPI.Status())
