"""Host staging of GPU buffers, for an MPI library that is not CUDA-aware.

Whether an MPI library accepts device pointers cannot be asked through mpi4py, so the user says
so: ``MPICOLL_CUDA_AWARE=1`` hands CuPy buffers to MPI directly; ``0`` stages them through host
memory; unset stages them too and warns once. Staging is per message:

- *send*: copy the device bytes into a page-locked (pinned) host buffer with an asynchronous
  copy on the current CUDA stream, **synchronize that stream** (MPI reads the host buffer
  outside CUDA's stream order), then ``Isend`` from the host buffer;
- *receive*: ``Irecv`` into a pinned host buffer; once it completes, queue the host-to-device copy
  on the current stream and record an event. The GPU reduction that follows is queued behind it
  in stream order, so it needs no synchronization; the host buffer is handed out again only after
  that event, so a later receive can never overwrite bytes still being copied.

The pipelined algorithms send large messages in segments (``config.segment_bytes``), so the
segment is the staging chunk: while segment *k* is on the wire, segment *k+1* is copied to the
host, and segment *k-1*'s host-to-device copy and reduction run on the GPU. Host buffers come from
a free list (:class:`PinnedPool`): steady-state calls allocate nothing.

The device side sits behind a small interface (:class:`CupyDevice`), so the staging logic
(ordering, buffer reuse) is tested on the CPU with a stand-in whose copies only happen when the
stream is synchronized: a missing synchronization shows up there as wrong bytes.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from mpi4py import MPI

from ..backend import is_cupy
from ..config import config
from .scratch import size_class


class Device(Protocol):
    """The device operations staging needs."""

    def allocate_pinned(self, nbytes: int) -> np.ndarray:
        """A page-locked host buffer of ``nbytes`` bytes (``uint8``)."""

    def to_host(self, device: Any, host: np.ndarray) -> None:
        """Copy ``device``'s bytes into ``host`` and return once they are there."""

    def to_device(self, host: np.ndarray, device: Any) -> Any:
        """Queue the copy of ``host`` into ``device``; return an event that completes with it."""

    def done(self, event: Any) -> bool:
        """Whether the copy behind ``event`` has finished."""

    def wait(self, event: Any) -> None:
        """Block until the copy behind ``event`` has finished."""


class CupyDevice:
    """:class:`Device` on CuPy: copies on the current stream, pinned memory from CuPy's pool."""

    def __init__(self) -> None:
        self.cupy = sys.modules["cupy"]  # imported already: staging starts from a CuPy array

    def allocate_pinned(self, nbytes: int) -> np.ndarray:
        memory = self.cupy.cuda.alloc_pinned_memory(nbytes)  # what cupyx.empty_pinned does
        return np.ndarray((nbytes,), dtype=np.uint8, buffer=memory)

    def to_host(self, device: Any, host: np.ndarray) -> None:
        stream = self.cupy.cuda.get_current_stream()
        self.cupy.cuda.runtime.memcpyAsync(host.ctypes.data, device.data.ptr, device.nbytes,
                                           self.cupy.cuda.runtime.memcpyDeviceToHost, stream.ptr)
        stream.synchronize()  # synchronize! MPI reads `host` next, outside stream order

    def to_device(self, host: np.ndarray, device: Any) -> Any:
        stream = self.cupy.cuda.get_current_stream()
        self.cupy.cuda.runtime.memcpyAsync(device.data.ptr, host.ctypes.data, device.nbytes,
                                           self.cupy.cuda.runtime.memcpyHostToDevice, stream.ptr)
        return stream.record()

    def done(self, event: Any) -> bool:
        return bool(event.done)

    def wait(self, event: Any) -> None:
        event.synchronize()


class PinnedPool:
    """A free list of pinned host buffers in power-of-two size classes.

    ``acquire`` hands out a free buffer of the right class (allocating only when none is free);
    ``release`` returns it, optionally with the event of a device copy still reading it, and the
    buffer is handed out again only after that event.
    """

    def __init__(self, device: Device) -> None:
        self.device = device
        self._free: dict[int, list[tuple[np.ndarray, Any]]] = {}
        self.allocations = 0

    def acquire(self, nbytes: int) -> np.ndarray:
        """A host buffer of exactly ``nbytes`` bytes (a view of a pooled buffer)."""
        capacity = size_class(nbytes)
        free = self._free.setdefault(capacity, [])
        ready = next((i for i, (_, event) in enumerate(free) if event is None or self.device.done(event)), None)
        if ready is None and free:
            ready = 0
            self.device.wait(free[0][1])
        if ready is None:
            self.allocations += 1
            buffer = self.device.allocate_pinned(capacity)
        else:
            buffer, _ = free.pop(ready)
        return buffer[:nbytes]

    def release(self, view: np.ndarray, event: Any = None) -> None:
        """Give back a buffer from :meth:`acquire` (``event``: a copy that must finish before reuse)."""
        buffer = view.base if view.base is not None else view
        self._free.setdefault(buffer.nbytes, []).append((buffer, event))

    @property
    def nbytes(self) -> int:
        """Bytes held by free buffers."""
        return sum(b.nbytes for free in self._free.values() for b, _ in free)


class StagedRequest:
    """An MPI request on a host buffer, plus what to do once it completes."""

    def __init__(self, request: MPI.Request, complete: Callable[[], None] | None) -> None:
        self.request = request
        self._complete = complete

    def complete(self) -> None:
        """Run the completion step (copy back, give the host buffer back) once the request is done.

        Waiting on a finished request again is allowed, as in MPI: the step runs only the first time.
        """
        step, self._complete = self._complete, None
        if step is not None:
            step()


class Stager:
    """Point-to-point messages of device buffers through pinned host buffers."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.pool = PinnedPool(device)

    def host_copy(self, buf: Any) -> np.ndarray:
        """A pinned host buffer holding ``buf``'s bytes (synchronized); give it back with :meth:`release`."""
        host = self.pool.acquire(buf.nbytes)
        if buf.nbytes:
            self.device.to_host(buf, host)
        return host

    def copy_back(self, host: np.ndarray, buf: Any) -> None:
        """Queue the copy of ``host`` into ``buf`` and give ``host`` back once the copy is done."""
        event = self.device.to_device(host, buf) if buf.nbytes else None
        self.pool.release(host, event)

    def release(self, host: np.ndarray) -> None:
        """Give back a host buffer that no device copy is reading."""
        self.pool.release(host)

    def isend(self, mpi_comm: MPI.Comm, buf: Any, dest: int, tag: int) -> StagedRequest:
        """Copy ``buf`` to the host and start sending it."""
        host = self.host_copy(buf)
        request = mpi_comm.Isend([host, MPI.BYTE], dest, tag)
        return StagedRequest(request, lambda: self.release(host))

    def irecv(self, mpi_comm: MPI.Comm, buf: Any, source: int, tag: int) -> StagedRequest:
        """Start receiving into a host buffer; completion copies it into ``buf``."""
        host = self.pool.acquire(buf.nbytes)
        request = mpi_comm.Irecv([host, MPI.BYTE], source, tag)
        return StagedRequest(request, lambda: self.copy_back(host, buf))


_warned_unset = False


def needs_staging(buf: Any) -> bool:
    """Whether ``buf`` is a GPU buffer that must go through host memory (``cuda_aware`` not ``1``)."""
    global _warned_unset
    if buf is None or not is_cupy(buf):
        return False
    setting = config.get("cuda_aware")
    if setting == "1":
        return False
    if setting == "unset" and not _warned_unset:
        _warned_unset = True
        warnings.warn("MPICOLL_CUDA_AWARE is unset: mpicoll stages GPU buffers through pinned host memory. "
                      "Set MPICOLL_CUDA_AWARE=1 if your MPI library is CUDA-aware (faster), or 0 to keep "
                      "staging without this warning", stacklevel=4)
    return True


def stager_of(comm: Any) -> Stager:
    """The communicator's :class:`Stager` on CuPy (made on first use)."""
    stager = comm.cache.get("stager")
    if stager is None:
        stager = comm.cache["stager"] = Stager(CupyDevice())
    return stager
