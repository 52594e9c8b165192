"""Non-blocking collectives: start now, wait later, overlap with compute.

``h = mpicoll.iallreduce(x)`` queues the collective and returns at once; ``h.wait()`` returns
the result (``h.test()`` / ``h.done`` ask without blocking). A background *progress engine* (one
thread per communicator) runs the queued collectives in submission order on a private
``Dup()`` of the communicator, so progress never depends on the caller polling, and blocking
collectives issued meanwhile on the caller's communicator cannot be confused with them.
Many handles may be in flight; they can be waited for in any order.

Every rank must start the same non-blocking collectives in the same order (as with MPI's). Each
runs with the usual argument checks inside the engine, so bad input surfaces at ``wait()`` on
every rank, as the same error the blocking call would raise. The engine needs
``MPI_THREAD_MULTIPLE`` (mpi4py asks for it by default); with a lower thread level the
collectives run at once, inside the ``i*`` call, and a warning says so once.

The engine's thread ends when its communicator is freed (:meth:`Engine.close`), and at the latest
when the interpreter exits: :mod:`~mpicoll.transport.teardown` lets it finish what is queued
first, so that no collective or future completion is cut off by the interpreter's finalization.

The input arrays must not be modified, and ``out`` not read, until ``wait()`` returns.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import warnings
from collections.abc import Callable
from typing import Any

from .. import timeline
from ..backend import is_cupy, synchronize
from ..config import config
from ..errors import UsageError, WaitTimeoutError
from ..transport import Comm, as_comm, teardown
from ..transport.p2p import patient_waits
from .alltoall import alltoall
from .api import allgather, allreduce, broadcast, reduce, reduce_scatter


class Handle:
    """A started collective: ``wait()``, ``test()``, ``done``."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._event = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Handle], None]] = []

    def _finish(self, result: Any = None, error: BaseException | None = None) -> None:
        """Record the outcome once; then run the callbacks (their failures never change it)."""
        with self._lock:
            if self._event.is_set():
                return
            self._result, self._error = result, error
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._call(callback)

    def _call(self, callback: Callable[[Handle], None]) -> None:
        try:
            callback(self)
        except BaseException as exc:  # a faulty callback must not take the engine down
            warnings.warn(f"mpicoll: a done-callback of {self.description} raised {type(exc).__name__}: {exc}",
                          stacklevel=2)

    def add_done_callback(self, callback: Callable[[Handle], None]) -> None:
        """Call ``callback(handle)`` once the collective finishes: at once if it has, else from the
        engine's thread. The callback may call :meth:`wait` (it returns at once) and must not block;
        an exception it raises is reported as a warning and changes nothing."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        self._call(callback)

    @property
    def done(self) -> bool:
        """Whether the collective has finished (successfully or not)."""
        return self._event.is_set()

    def test(self) -> bool:
        """The same as :attr:`done`; never blocks."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the collective finishes and return its result (re-raising its error).

        Raises:
            WaitTimeoutError: not finished within ``timeout`` seconds (the collective goes on); a
                ``TimeoutError``.
        """
        if not self._event.wait(timeout):
            raise WaitTimeoutError(f"{self.description} did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result

    def __repr__(self) -> str:
        return f"<Handle {self.description} {'done' if self.done else 'in flight'}>"


class Engine:
    """Runs queued collectives, in order, on a background thread and a private communicator."""

    def __init__(self, comm: Comm) -> None:
        self.comm = Comm(comm.mpi, hosts=comm.hosts)  # a Dup (collective): its messages never meet the caller's
        self._queue: queue.SimpleQueue[tuple[Handle, Callable[[Comm], Any], dict[str, Any], Any, int] | None] = \
            queue.SimpleQueue()
        self._busy = threading.Lock()  # held by whichever thread runs a collective on self.comm
        self._pending = 0  # submitted and not finished
        self._count = threading.Lock()
        self._stopped = False  # no more work is taken: the queue ends with its sentinel
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"mpicoll-engine-{comm.rank}", daemon=True)
        self._thread.start()
        teardown.end_before_exit(self._thread, self._stop, self._describe)

    def submit(self, description: str, work: Callable[[Comm], Any], like: Any = None) -> Handle:
        """Queue ``work``; it runs with the configuration of now and on ``like``'s GPU, if any.

        Raises:
            UsageError: the engine has stopped (its communicator was freed, or the interpreter is exiting).
        """
        handle = Handle(description)
        with self._count:
            if self._stopped:
                raise UsageError(f"{description}: the progress engine of this communicator has stopped (the "
                                 f"communicator was freed, or the interpreter is exiting); nothing can start on it")
            self._pending += 1
        self._queue.put((handle, work, config.as_dict(), like, timeline.now_ns()))
        return handle

    def run_now(self, description: str, work: Callable[[Comm], Any], like: Any = None) -> Any:
        """Run ``work`` in order after everything submitted before: on the caller's thread when the
        engine has nothing queued or running (no hand-off, MPI's own waits), else queued and waited for."""
        if threading.current_thread() is self._thread:  # from a callback of a finishing collective
            return work(self.comm)
        with self._busy:
            with self._count:
                idle = self._pending == 0
            if idle:
                result = work(self.comm)
                synchronize(like)  # as the engine does: GPU results complete on return
                return result
        return self.submit(description, work, like).wait()

    def _run(self) -> None:
        patient_waits()  # leave the cores to the caller's compute while waiting on the network
        while True:
            item = self._queue.get()
            if item is None:
                return
            handle, work, settings, like, queued_ns = item
            timeline.complete("queue", "queue", queued_ns, timeline.now_ns(), handle=handle.description)
            result, error = None, None
            with self._busy:
                try:
                    with config.pinned(settings), _on_device_of(like):
                        result = work(self.comm)
                        synchronize(like)  # GPU results are complete when wait() returns, on any stream
                except BaseException as exc:  # handed to wait(): the engine itself keeps going
                    error = exc
                with self._count:
                    self._pending -= 1
            handle._finish(result=result, error=error)

    def _stop(self) -> None:
        """Let the thread end once what is queued has run (never blocks; idempotent)."""
        with self._count:
            if self._stopped:
                return
            self._stopped = True
        self._queue.put(None)

    def _describe(self) -> str:
        with self._count:
            pending = self._pending
        return f"mpicoll's progress engine on rank {self.comm.rank} ({pending} collective(s) not finished)"

    def close(self) -> None:
        """Finish what is queued, stop the thread and free the engine's communicator. Collective;
        idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop()
        if threading.current_thread() is not self._thread:  # from a callback of its own: it ends after it
            self._thread.join()
            teardown.forget(self._thread)
        self.comm.free()


_warned_thread_level = False


def engine_of(comm: Any) -> Engine | None:
    """The progress engine of ``comm`` (made on first use), or ``None`` without MPI_THREAD_MULTIPLE."""
    global _warned_thread_level
    from mpi4py import MPI

    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
        if not _warned_thread_level:
            _warned_thread_level = True
            warnings.warn("MPI provides less than MPI_THREAD_MULTIPLE, so mpicoll's non-blocking collectives "
                          "run at once inside the i* call (no overlap); initialize MPI with THREAD_MULTIPLE "
                          "(mpi4py's default) to get the background engine", stacklevel=3)
        return None
    c = as_comm(comm)
    engine = c.cache.get("engine")
    if engine is None:
        engine = c.cache["engine"] = Engine(c)
    return engine


def _on_device_of(array: Any) -> Any:
    """``with`` this: CuPy work on ``array``'s GPU (the current device is per thread)."""
    return array.device if is_cupy(array) else contextlib.nullcontext()


def start(comm: Any, description: str, work: Callable[[Comm], Any], like: Any = None) -> Handle:
    """Queue ``work(engine_comm)`` on ``comm``'s engine (or run it now without one); ``like``: the
    input array, whose GPU the engine then works on."""
    engine = engine_of(comm)
    if engine is not None:
        return engine.submit(description, work, like)
    handle = Handle(description)
    try:
        handle._finish(result=work(as_comm(comm)))
    except BaseException as exc:
        handle._finish(error=exc)
    return handle


def run_in_order(comm: Any, description: str, work: Callable[[Comm], Any], like: Any = None) -> Any:
    """Run the blocking ``work(c)`` in order with the non-blocking collectives started before it on
    ``comm``, on the same communicator as they, so that a blocking call on one rank meets the
    matching non-blocking call of another (as in MPI, where both share one communicator).

    It runs on the caller's thread when nothing is queued (the common case: no hand-off), else
    behind the queued collectives, and returns ``work``'s result (or raises its error). ``like``:
    the input array, whose GPU work is synchronized before returning.
    """
    engine = engine_of(comm)
    if engine is None:
        return work(as_comm(comm))
    return engine.run_now(description, work, like)


def wait_all(handles: list[Handle], timeout: float | None = None) -> list[Any]:
    """Wait for every handle; results in the same order."""
    return [h.wait(timeout) for h in handles]


def iallreduce(x: Any, op: str = "sum", *, algorithm: str = "auto", comm: Any = None, out: Any = None) -> Handle:
    """Non-blocking :func:`~mpicoll.allreduce`; ``wait()`` returns the result."""
    return start(comm, "iallreduce", lambda c: allreduce(x, op, algorithm=algorithm, comm=c, out=out), x)


def ireduce_scatter(x: Any, op: str = "sum", *, counts: Any = None, algorithm: str = "auto", comm: Any = None,
                    out: Any = None) -> Handle:
    """Non-blocking :func:`~mpicoll.reduce_scatter`."""
    return start(comm, "ireduce_scatter",
                 lambda c: reduce_scatter(x, op, counts=counts, algorithm=algorithm, comm=c, out=out), x)


def iallgather(x: Any, *, counts: Any = None, algorithm: str = "auto", comm: Any = None, out: Any = None) -> Handle:
    """Non-blocking :func:`~mpicoll.allgather`."""
    return start(comm, "iallgather", lambda c: allgather(x, counts=counts, algorithm=algorithm, comm=c, out=out), x)


def ibroadcast(x: Any, root: int = 0, *, algorithm: str = "auto", comm: Any = None, out: Any = None) -> Handle:
    """Non-blocking :func:`~mpicoll.broadcast`."""
    return start(comm, "ibroadcast", lambda c: broadcast(x, root, algorithm=algorithm, comm=c, out=out), x)


def ireduce(x: Any, op: str = "sum", root: int = 0, *, algorithm: str = "auto", comm: Any = None,
            out: Any = None) -> Handle:
    """Non-blocking :func:`~mpicoll.reduce`; ``wait()`` returns ``None`` off the root."""
    return start(comm, "ireduce", lambda c: reduce(x, op, root, algorithm=algorithm, comm=c, out=out), x)


def ialltoall(x: Any, *, sendcounts: Any = None, recvcounts: Any = None, algorithm: str = "auto", comm: Any = None,
              out: Any = None) -> Handle:
    """Non-blocking :func:`~mpicoll.alltoall`."""
    return start(comm, "ialltoall", lambda c: alltoall(x, sendcounts=sendcounts, recvcounts=recvcounts,
                                                       algorithm=algorithm, comm=c, out=out), x)
