"""The :class:`Comm` wrapper: a private communicator, tags and scratch buffers."""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any

from .. import timeline
from ..errors import ArgumentError
from .scratch import ScratchPool
from .topology import host_layout
from .watchdog import start_mpi, waiting_on

if TYPE_CHECKING:
    from mpi4py import MPI

# Tags below this are left to the application on the duplicated communicator (they cannot
# collide anyway: a Dup() has its own matching context).
_FIRST_TAG = 100
_serials = itertools.count()  # Comm() is collective, so the n-th Comm of a process is the n-th on its peers


class Comm:
    """An MPI communicator for mpicoll collectives.

    Wraps a ``Dup()`` of the given communicator so that mpicoll's messages can never match the
    application's, hands out message tags, and keeps scratch buffers that collectives reuse.
    Creating a ``Comm`` is collective over the communicator (it calls ``Dup``).

    Args:
        comm: the communicator to duplicate; ``MPI.COMM_WORLD`` when omitted.
        dup: duplicate ``comm`` (the default). Pass ``False`` only for a communicator that nobody
            else sends on.

    Example:
        >>> from mpi4py import MPI                               # doctest: +SKIP
        >>> with mpicoll.Comm(MPI.COMM_WORLD) as comm:           # doctest: +SKIP
        ...     y = mpicoll.allreduce(x, comm=comm)
    """

    def __init__(self, comm: MPI.Comm | None = None, *, dup: bool = True, hosts: tuple[int, ...] | None = None) -> None:
        waiting_on(None, "starting MPI and creating the communicator (Dup, host detection)")
        MPI = start_mpi()
        base = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(base, MPI.Intracomm) or base == MPI.COMM_NULL:
            raise ArgumentError(f"Comm() needs an mpi4py intracommunicator, got {type(base).__name__}")
        if hosts is not None and len(hosts) != base.Get_size():
            raise ArgumentError(f"Comm(): hosts has {len(hosts)} entries for {base.Get_size()} ranks")
        self.mpi: MPI.Comm = base.Dup() if dup else base
        self._owned = dup
        self.rank: int = self.mpi.Get_rank()
        self.size: int = self.mpi.Get_size()
        tag_ub = self.mpi.Get_attr(MPI.TAG_UB) or 32767
        self._tag_span = max(1, min(int(tag_ub), 1 << 22) - _FIRST_TAG - 1)
        #: the one tag of the argument agreement's messages (never handed out by :meth:`new_tag`)
        self.agreement_tag: int = _FIRST_TAG + self._tag_span
        self._tags = itertools.count()  # next() on a count is atomic under the GIL: no lock needed
        self.scratch = ScratchPool()
        #: the host index of every rank (collective to find out, so done here, where all ranks are)
        self.hosts: tuple[int, ...] = host_layout(self.mpi) if hosts is None else hosts
        #: the same number on every rank for the same communicator (timeline events name it)
        self.serial: int = next(_serials)
        timeline.autostart(base)  # MPICOLL_TIMELINE: start recording where the first communicator is made
        #: per-communicator memo of schedules (e.g. recursive-doubling partners), keyed by algorithm
        self.cache: dict[str, Any] = {}

    def new_tag(self) -> int:
        """A tag for one collective call.

        Every rank calls collectives in the same order, so the counters stay in step and the
        same call gets the same tag on every rank; concurrent non-blocking calls get distinct tags.
        """
        return _FIRST_TAG + next(self._tags) % self._tag_span

    @property
    def several_ranks_on_several_hosts(self) -> bool:
        """Whether the ranks span more than one host and some host runs more than one of them."""
        return len(set(self.hosts)) > 1 and len(self.hosts) > len(set(self.hosts))

    def free(self) -> None:
        """Free the duplicated communicator, what was built on it and the scratch buffers. Collective."""
        for item in list(self.cache.values()):
            close = getattr(item, "close", None)
            if close is not None:  # a progress engine, sub-communicators
                close()
        self.scratch.clear()
        self.cache.clear()
        if self._owned and self.mpi is not None:
            self.mpi.Free()
        self._owned = False

    def __enter__(self) -> Comm:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.free()
        # with an exception on its way, leave the communicator be: freeing it means waiting for its
        # engine, which may wait on peers this rank will never meet; the abort hook ends the job

    def __repr__(self) -> str:
        return f"Comm(rank={self.rank}, size={self.size})"


_default: Comm | None = None
_wrapped: dict[int, Comm] = {}
_registry_lock = threading.Lock()


def default_comm() -> Comm:
    """The process-wide default: a private ``Dup()`` of ``MPI.COMM_WORLD``, made on first use."""
    global _default
    made = _default
    if made is not None:  # every collective asks: no lock once it exists (a read of a global is atomic)
        return made
    with _registry_lock:
        if _default is None:
            _default = Comm()
        return _default


def existing_default() -> Comm | None:
    """The default communicator if it was made already, else ``None`` (never makes it: making it
    is collective)."""
    return _default


def as_comm(comm: Any = None) -> Comm:
    """Resolve the ``comm=`` argument of a collective.

    ``None`` gives :func:`default_comm`; a :class:`Comm` is used as is; an mpi4py communicator is
    wrapped (and duplicated, collectively) on first use and the wrapper cached. For communicators
    you create and free repeatedly, make one :class:`Comm` yourself and pass that instead.
    """
    if comm is None:
        return default_comm()
    if isinstance(comm, Comm):
        return comm
    from mpi4py import MPI

    if not isinstance(comm, MPI.Comm):
        raise ArgumentError(
            f"comm must be an mpicoll.Comm or an mpi4py communicator, got {type(comm).__name__}"
        )
    key = comm.py2f()
    with _registry_lock:
        wrapped = _wrapped.get(key)
        # A freed communicator's handle can be reused by a new one: re-wrap if the group changed.
        if wrapped is None or MPI.Comm.Compare(comm, wrapped.mpi) not in (MPI.IDENT, MPI.CONGRUENT):
            wrapped = _wrapped[key] = Comm(comm)
        return wrapped
