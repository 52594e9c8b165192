"""Faults that end jobs instead of hanging them: the stall watchdog and the abort-on-error hook.

- :func:`watch` marks the collective a rank is in; :func:`waiting_on` notes the peer and step it
  is blocked on. With ``config.timeout`` > 0 a daemon thread checks every fraction of a second;
  a rank stuck longer than the timeout writes one line (which collective, algorithm, step, peer,
  for how long) and aborts the job through ``MPI_Abort``, so a stalled rank becomes a failure.
- :func:`install_abort_hook`: with more than one rank, an uncaught exception on one rank would
  leave the others waiting forever in their next collective (``python script.py`` does not
  abort them; ``python -m mpi4py script.py`` does). The hook prints the traceback with the rank
  and calls ``MPI_Abort``. ``config.abort_on_error = False`` leaves ``sys.excepthook`` alone.
  It is installed once per process, by :func:`start_mpi` (where mpicoll first initializes or
  imports MPI: the first communicator, ``mpicoll.rank()``, the torch backend), not by each
  ``Comm``.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .. import timeline
from ..config import config


@dataclass
class _Activity:
    rank: int | None  # None: the world rank, found when reporting
    collective: str
    algorithm: str
    since: float
    peer: int | None = None
    step: str = ""
    waiting: bool = True  # in a wait now (else computing between waits; ``step`` is the last one)


_activities: dict[int, _Activity] = {}  # by thread: the caller's and the non-blocking engine's
_thread: threading.Thread | None = None
_lock = threading.Lock()


@contextmanager
def watch(rank: int | None, collective: str, algorithm: str) -> Iterator[None]:
    """Mark this thread as inside ``collective`` (one configuration lookup when the watchdog is off)."""
    if config.get("timeout") <= 0:
        yield
        return
    _ensure_thread()
    me = threading.get_ident()
    previous = _activities.get(me)
    _activities[me] = _Activity(rank, collective, algorithm, time.monotonic())
    try:
        yield
    finally:
        if previous is None:
            _activities.pop(me, None)
        else:
            _activities[me] = previous


def refine(algorithm: str) -> None:
    """Name the algorithm ``auto`` resolved to, for the watchdog's report and the timeline."""
    timeline.annotate(algorithm=algorithm)
    activity = _activities.get(threading.get_ident())
    if activity is not None:
        activity.algorithm = algorithm


def waiting_on(peer: int | None, step: str = "") -> None:
    """Note what this thread's collective is blocked on (called by the point-to-point waits)."""
    activity = _activities.get(threading.get_ident())
    if activity is not None:
        activity.peer, activity.step, activity.waiting = peer, step, True


def waited() -> None:
    """The wait noted by :func:`waiting_on` is over: until the next one, this thread computes."""
    activity = _activities.get(threading.get_ident())
    if activity is not None:
        activity.waiting = False


def _ensure_thread() -> None:
    global _thread
    with _lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="mpicoll-watchdog", daemon=True)
            _thread.start()


def _run() -> None:
    while True:
        timeout = config.get("timeout")
        time.sleep(min(0.25, max(timeout, 0.05) / 4))
        for activity in list(_activities.values()):
            if timeout > 0 and time.monotonic() - activity.since > timeout:
                _report_and_abort(activity, timeout)


_mpi_ready = False
_LAUNCHER_RANKS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def mpi_ready() -> None:
    """Note that ``MPI_Init`` has returned. Until then a rank may be blocked *in* it (it waits for
    every rank): the watchdog must not touch MPI then (the import of ``mpi4py.MPI`` is in progress
    on the main thread, and ``MPI_Abort`` is not available before ``MPI_Init``)."""
    global _mpi_ready
    _mpi_ready = True


def start_mpi() -> Any:
    """``mpi4py.MPI``, initializing MPI if nobody has: ``MPI_Init`` waits for every rank while it
    holds the GIL, so the watchdog thread cannot run then; with ``config.timeout`` set, a C-level
    timer (``faulthandler``) stands in for it and ends the process with every thread's stack
    instead. It replaces any ``faulthandler.dump_traceback_later`` timer armed before."""
    timeout = config.get("timeout")
    armed = timeout > 0 and "mpi4py.MPI" not in sys.modules
    if armed:
        faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        from mpi4py import MPI
    finally:
        if armed:
            faulthandler.cancel_dump_traceback_later()
    mpi_ready()
    if not _hook_installed:  # the one place: where mpicoll first touches MPI, whatever communicator follows
        install_abort_hook(MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size())
    return MPI


def _world_rank() -> int | str:
    if _mpi_ready:
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_rank()
    return next((os.environ[v] for v in _LAUNCHER_RANKS if v in os.environ), "?")


def _report_and_abort(activity: _Activity, timeout: float) -> None:
    spent = time.monotonic() - activity.since
    rank = _world_rank() if activity.rank is None else activity.rank
    if not activity.waiting:  # this rank is the slow one: it waits on nobody
        after = f" (last wait done: {activity.step})" if activity.step else ""
        sys.stderr.write(f"mpicoll watchdog: rank {rank} has spent {spent:.1f} s (MPICOLL_TIMEOUT={timeout:g}) in "
                         f"{activity.collective} ({activity.algorithm}) without waiting on any rank: it is computing "
                         f"or stalled itself{after}; aborting the job.\n")
        _abort(124)
    peer = "the other ranks" if activity.peer is None else f"rank {activity.peer}"
    step = f", {activity.step}" if activity.step else ""
    hint = ("" if activity.peer is not None else " A rank that names itself in no watchdog line is frozen (stopped, "
            "e.g. SIGSTOP, or swapping): mpicoll.run names a stopped rank.")
    sys.stderr.write(f"mpicoll watchdog: rank {rank} has waited {spent:.1f} s (MPICOLL_TIMEOUT={timeout:g}) "
                     f"in {activity.collective} ({activity.algorithm}{step}) for {peer}; aborting the job. "
                     f"Look at what {peer} {'is' if activity.peer is not None else 'are'} doing: stalled, dead, or "
                     f"in a different collective.{hint}\n")
    _abort(124)


ABORT_GRACE = 5.0  # seconds MPI_Abort may take before this process ends itself


def _abort(code: int) -> None:
    """``MPI_Abort`` after a moment, so that the launcher forwards the report first (MPICH's hydra
    can tear its output forwarding down with the job and lose the last lines). This process ends
    for sure: if ``MPI_Abort`` returns, raises or hangs (a launcher it cannot reach behind a cut
    link), ``os._exit`` follows."""
    sys.stderr.flush()
    timeline.dump_local()  # the job is ending: keep this rank's events in its own file
    time.sleep(0.3)
    deadline = threading.Timer(ABORT_GRACE, os._exit, (code,))
    deadline.daemon = True
    deadline.start()
    try:
        if _mpi_ready:  # else stuck in MPI_Init: exiting is all this rank can do
            from mpi4py import MPI

            MPI.COMM_WORLD.Abort(code)
    finally:
        sys.stderr.flush()
        os._exit(code)


_hook_installed = False


def install_abort_hook(rank: int, size: int) -> None:
    """Abort every rank when this one dies of an uncaught exception (see the module docstring)."""
    global _hook_installed
    if _hook_installed or size < 2 or not config.get("abort_on_error"):
        return
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> Any:
        if issubclass(kind, KeyboardInterrupt):
            return previous(kind, error, tb)
        text = "".join(traceback.format_exception(kind, error, tb))
        sys.stderr.write(f"mpicoll: rank {rank} of {size} raised an uncaught exception; aborting all ranks "
                         f"(set MPICOLL_ABORT_ON_ERROR=0 to keep the default behaviour)\n{text}")
        _abort(1)
        return None

    sys.excepthook = hook
    _hook_installed = True
