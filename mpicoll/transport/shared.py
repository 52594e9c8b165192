"""MPI-3 shared-memory windows inside one host: every rank reads its peers' memory directly.

A :class:`SharedWindow` is one ``MPI_Win_allocate_shared`` over a communicator whose ranks all
share memory: one segment per rank, each mapped into every rank's address space, so a rank can
read (and write) a peer's segment as a NumPy array with no message and no copy through MPI.
The window is opened once for passive access (``MPI_Win_lock_all``); :meth:`SharedWindow.fence`
(memory sync, barrier, memory sync) separates phases in which ranks touch each other's data.

:func:`shared_empty` allocates a user array inside such a window; ``allreduce(x, out=x,
algorithm="shm")`` on arrays made by it at the same place on every rank reads the peers' arrays
in place (no copy in, no copy out). Creating either is collective over the communicator.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any

import numpy as np

from ..errors import ArgumentError, UnsupportedError
from .comm import Comm, as_comm

_ALIGN = 64  # bytes: segments start on a cache line
_serials = itertools.count(1)  # windows are made collectively, so the n-th is the n-th on every rank
_live: weakref.WeakValueDictionary[int, SharedWindow] = weakref.WeakValueDictionary()
_lock = threading.Lock()


def shares_memory(comm: Comm) -> bool:
    """Whether every rank of ``comm`` can map the others' memory (collective on first call)."""
    found = comm.cache.get("shm.shares")
    if found is None:
        from mpi4py import MPI

        node = comm.mpi.Split_type(MPI.COMM_TYPE_SHARED)
        found = comm.cache["shm.shares"] = node.Get_size() == comm.size
        node.Free()
    return bool(found)


class SharedWindow:
    """``nbytes`` of shared memory per rank of ``comm`` (collective; see the module docstring).

    Raises:
        UnsupportedError: the ranks of ``comm`` do not all share memory (several hosts).
    """

    def __init__(self, comm: Comm, nbytes: int) -> None:
        from mpi4py import MPI

        if not shares_memory(comm):
            raise UnsupportedError(f"a shared-memory window needs every rank on one host; this communicator's "
                                   f"{comm.size} ranks span {len(set(comm.hosts))} hosts (use "
                                   f"algorithm='hierarchical' across hosts)")
        self.comm, self.nbytes = comm, int(nbytes)
        size = max(_ALIGN, -(-self.nbytes // _ALIGN) * _ALIGN)
        self.win = MPI.Win.Allocate_shared(size, 1, comm=comm.mpi)
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self.segments = [np.frombuffer(self.win.Shared_query(k)[0], dtype=np.uint8) for k in range(comm.size)]
        self.serial = next(_serials)
        with _lock:
            _live[self.serial] = self

    def view(self, rank: int, dtype: Any, count: int, offset: int = 0) -> np.ndarray:
        """Rank ``rank``'s segment as ``count`` elements of ``dtype`` from byte ``offset``."""
        dtype = np.dtype(dtype)
        end = offset + count * dtype.itemsize
        if offset < 0 or end > self.nbytes:
            raise ArgumentError(f"shared window of {self.nbytes} bytes per rank: bytes {offset}..{end} are outside it")
        return self.segments[rank][offset:end].view(dtype)

    def locate(self, array: np.ndarray) -> int | None:
        """The byte offset of ``array``'s data in this rank's segment, or ``None`` if it is not
        there (or not contiguous)."""
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
            return None
        mine = self.segments[self.comm.rank]
        base = mine.__array_interface__["data"][0]
        start = array.__array_interface__["data"][0]
        if base <= start and start + array.nbytes <= base + self.nbytes:
            return start - base
        return None

    def fence(self, comm: Comm | None = None) -> None:
        """Every rank's writes so far are visible to all, and nobody goes on before all got here.

        ``comm``: the communicator whose barrier synchronizes (default the window's own). A
        collective running on the progress engine passes its own duplicate, so that it never
        enters a barrier on a communicator the caller's thread may be using at the same time."""
        self.win.Sync()
        (comm or self.comm).mpi.Barrier()
        self.win.Sync()

    def free(self) -> None:
        """Release the window (collective). Arrays viewing it must not be used afterwards."""
        if self.win is not None:
            self.win.Unlock_all()
            self.win.Free()
            self.win = None
            with _lock:
                _live.pop(self.serial, None)


def window_of(array: np.ndarray) -> tuple[SharedWindow, int] | None:
    """The live window holding ``array`` in this rank's segment, and its byte offset there."""
    with _lock:
        windows = list(_live.values())
    for window in windows:
        if window.win is not None:
            offset = window.locate(array)
            if offset is not None:
                return window, offset
    return None


class SharedArray(np.ndarray):
    """A NumPy array in this rank's segment of a :class:`SharedWindow` (keeps the window alive)."""

    window: SharedWindow | None

    def __array_finalize__(self, obj: Any) -> None:
        self.window = getattr(obj, "window", None)


def host_comm(comm: Comm) -> Comm:
    """``comm`` itself on one host; else the communicator of this rank's host (by ``comm.hosts``,
    split the way :mod:`mpicoll.collectives.hierarchical` splits it), made once (collectively) and
    kept with ``comm``."""
    if len(set(comm.hosts)) == 1:
        return comm
    found = comm.cache.get("shm.host")
    if found is None:
        host = comm.hosts[comm.rank]
        split = comm.mpi.Split(host, comm.rank)
        found = comm.cache["shm.host"] = _HostComm(Comm(split, dup=False, hosts=(0,) * comm.hosts.count(host)))
    return found.comm


class _HostComm:
    """A host's communicator kept in its parent's cache: freed with the parent (:meth:`Comm.free`
    closes what its cache holds)."""

    def __init__(self, comm: Comm) -> None:
        self.comm = comm

    def close(self) -> None:
        self.comm.free()
        self.comm.mpi.Free()


def shared_empty(shape: int | tuple[int, ...], dtype: Any = np.float32, *, comm: Any = None) -> SharedArray:
    """An uninitialised array in shared memory that every rank of ``comm`` on its host can read in place.

    Collective over ``comm`` (same ``shape`` and ``dtype`` everywhere). On one host every rank
    reads every other's; when ``comm`` spans hosts (``comm.hosts``), each host's ranks share one
    window among themselves. ``mpicoll.allreduce(a, out=a, algorithm="shm")`` on such arrays
    reads the peers' data where it lies: no copy into a staging buffer and none out of it (across
    hosts: inside each host). The memory lives as long as the array (or a view of it) does.

    Raises:
        UnsupportedError: the ranks of one host do not share memory.
    """
    c = host_comm(as_comm(comm))
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    count = int(np.prod(shape, dtype=np.int64))
    window = SharedWindow(c, count * dtype.itemsize)
    array = window.view(c.rank, dtype, count).reshape(shape).view(SharedArray)
    array.window = window
    return array
