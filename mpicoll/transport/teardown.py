"""Orderly teardown: mpicoll's background threads end before the interpreter finalizes.

Once Python's finalization has begun, a daemon thread that asks for the GIL is ended on the
spot (``pthread_exit``). When that thread is inside C++ at that moment, the forced unwind meets a
``noexcept`` frame and the whole process aborts with "terminate called without an active
exception", after all its work was done. mpicoll's progress engine is such a thread: it completes
torch futures (DDP's buckets, the backend's ``Work``), and torch's ``Future.set_result`` releases
the GIL while it marks the future complete and runs its callbacks, then takes it back. The main
thread is woken by exactly that ``set_result`` and can reach the end of the script, and
finalization, before the engine's thread has its GIL back.

So a thread that completes futures registers here (:func:`end_before_exit`). An :mod:`atexit`
handler, which runs after the script and before finalization (and before mpi4py's
``MPI_Finalize``, which runs after the interpreter is gone), asks each to stop, then joins them,
all within :data:`EXIT_WAIT_S`. A thread still running then (a collective whose peers never
start it) is named on stderr and left behind, as before: exit never hangs on it for longer.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections.abc import Callable

#: how long, in seconds, the exit waits for mpicoll's threads altogether
EXIT_WAIT_S = 60.0

#: set when the interpreter is exiting: threads that poll give up their waits
exiting = threading.Event()

_threads: dict[threading.Thread, tuple[Callable[[], None] | None, Callable[[], str]]] = {}
_lock = threading.Lock()
_registered = False


def end_before_exit(thread: threading.Thread, stop: Callable[[], None] | None, what: Callable[[], str]) -> None:
    """Have ``thread`` ended before the interpreter finalizes.

    Args:
        thread: a started thread.
        stop: called at exit to make the thread end soon (``None``: it ends by itself, e.g. by
            watching :data:`exiting`); must not block.
        what: describes what the thread is doing, for the message if it does not end in time.
    """
    global _registered
    with _lock:
        for old in [t for t in _threads if not t.is_alive()]:
            del _threads[old]
        _threads[thread] = (stop, what)
        if not _registered:
            # registered after the timeline's handler (the first communicator starts the timeline,
            # engines come later), so it runs first: the threads' last events are still recorded
            atexit.register(end_threads)
            _registered = True


def forget(thread: threading.Thread) -> None:
    """``thread`` has been ended and joined by its owner: nothing left to do at exit."""
    with _lock:
        _threads.pop(thread, None)


def end_threads(timeout: float | None = None) -> list[str]:
    """Stop every registered thread and join it, within ``timeout`` seconds altogether (default
    :data:`EXIT_WAIT_S`). The at-exit handler; safe to call more than once.

    Returns:
        What the threads that are still running were doing (also written to stderr).
    """
    timeout = EXIT_WAIT_S if timeout is None else timeout
    exiting.set()
    with _lock:
        items = list(_threads.items())
        _threads.clear()
    for _, (stop, _what) in items:
        if stop is not None:
            stop()
    deadline = time.monotonic() + timeout
    left = []
    for thread, (_stop, what) in items:
        if thread is threading.current_thread():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            left.append(what())
    for description in left:
        sys.stderr.write(f"mpicoll: at exit, {description} did not end within {timeout:g} s; leaving it running "
                         f"(its peers may never start it)\n")
    return left
