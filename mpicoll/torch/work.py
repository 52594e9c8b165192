"""``torch.distributed.Work`` for the mpicoll backend: a finished call, or an engine handle.

torch's contract: ``wait()`` blocks until the collective is done (and raises its error), and
``get_future()`` returns a ``torch.futures.Future`` whose value is the list of output tensors,
completed when the collective is. DDP chains its bucket processing on that future, and C++
callers reach both methods through torch's ``PyWork`` trampoline.

Every call of a group, blocking or not, runs on one communicator in the order it was made
(a blocking call on one rank must meet the asynchronous call of another: torch's ``Join`` does
exactly that). A blocking call (``async_op=False``) runs on the caller's thread when nothing is
queued (:func:`~mpicoll.collectives.internal.run_in_order`) and returns a finished
:class:`Work`. An asynchronous one runs on mpicoll's progress engine; the engine's thread runs
the collective, then the copy-backs (casts, non-contiguous outputs), then completes the future,
so a ``wait()`` that returns has every output tensor in place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ..collectives import Handle
from ..collectives.internal import exchange, run_in_order, start
from ..config import config
from ..errors import MpicollError, WaitTimeoutError

#: what a collective does on a communicator: run, write the outputs, return them
Job = Callable[[Any], list[torch.Tensor]]


class Work(dist.Work):
    """The outcome of one collective of the mpicoll backend (see the module docstring)."""

    def __init__(self, description: str, source_rank: int = -1) -> None:
        super().__init__()
        self.description = description
        self._future: torch.futures.Future[list[torch.Tensor]] = torch.futures.Future()
        self._done = threading.Event()
        self._outputs: list[torch.Tensor] = []
        self._error: BaseException | None = None
        self._source = source_rank
        self._completing: int | None = None

    def _finish(self, outputs: list[torch.Tensor] | None = None, error: BaseException | None = None) -> None:
        # The future first, so that wait() returning means value() is ready; callbacks chained on
        # the future run inside set_result, on this thread, and may call wait(): it lets them through.
        self._completing = threading.get_ident()
        if error is None:
            self._outputs = outputs or []
            self._future.set_result(self._outputs)
        else:
            self._error = error
            self._future.set_exception(error)
        self._done.set()

    def wait(self, timeout: timedelta | None = None) -> bool:
        """Block until done; raise the collective's error. ``timeout`` (C++ passes 0 for none) raises
        :class:`~mpicoll.errors.WaitTimeoutError` (a ``TimeoutError``) if it passes first; the collective goes on."""
        seconds = None if timeout is None or timeout <= timedelta(0) else timeout.total_seconds()
        if self._completing == threading.get_ident():  # a callback of our own future
            pass
        elif not self._done.wait(seconds):
            raise WaitTimeoutError(f"mpicoll backend: {self.description} did not finish within {seconds} s")
        if self._error is not None:
            raise self._error
        return True

    def get_future(self) -> torch.futures.Future[list[torch.Tensor]]:
        """A future completed with the output tensors when the collective finishes."""
        return self._future

    def is_completed(self) -> bool:
        """Whether the collective has finished (successfully or not); never blocks."""
        return self._done.is_set()

    def is_success(self) -> bool:
        """Whether it finished without error."""
        return self._done.is_set() and self._error is None

    def exception(self) -> BaseException | None:
        """The error it finished with, if any."""
        return self._error

    def result(self) -> list[torch.Tensor]:
        """The output tensors (after :meth:`wait`)."""
        self.wait()
        return self._outputs

    def source_rank(self) -> int:
        """For ``recv`` from any source: the rank the message came from."""
        self.wait()
        return self._source

    def _source_rank(self) -> int:  # the name torch.distributed.recv calls
        return self.source_rank()

    def synchronize(self) -> None:
        """CPU and engine work: the same as :meth:`wait`."""
        self.wait()

    def __repr__(self) -> str:
        return f"<mpicoll Work {self.description} {'done' if self.is_completed() else 'in flight'}>"


def run(comm: Any, description: str, job: Job, blocking: bool, like: Any = None) -> Work:
    """Run ``job`` now on ``comm`` (``blocking``) or on ``comm``'s progress engine; a :class:`Work`.

    A blocking job's error is raised here, as gloo raises a failed blocking collective.
    """
    work = Work(description)
    if blocking:  # in order with the asynchronous calls before it, on their communicator
        work._finish(run_in_order(comm, description, job, like))
        return work
    handle = start(comm, description, job, like)
    handle.add_done_callback(lambda h: _complete(work, h))
    return work


def launch(comm: Any, description: str, collective: str, blocking: bool,
           prepare: Callable[[], tuple[Job, Any]]) -> Work:
    """``prepare()`` checks torch's arguments and returns ``(job, like)``; then :func:`run`.

    A check that fails on some ranks only must not leave the others waiting in ``collective``
    (the mpicoll collective the job runs): with validation on, the failing rank takes part in
    that collective's argument exchange with its error, so every other rank raises
    :class:`~mpicoll.PeerError` naming it, as mpicoll's own checks do. A blocking call raises
    the error here; an asynchronous one at ``wait()``.
    """
    try:
        job, like = prepare()
    except MpicollError as error:
        failure = error

        def announce(c: Any) -> list[torch.Tensor]:
            if config.get("validate"):
                exchange(c, collective, failure)
            raise failure

        return run(comm, description, announce, blocking)
    return run(comm, description, job, blocking, like)


def _complete(work: Work, handle: Handle) -> None:
    """On the engine's thread: hand the outcome to the Work and its future."""
    try:
        outputs = handle.wait()
    except BaseException as exc:  # handed to whoever waits
        work._finish(error=exc)
        return
    work._finish(outputs)


def finished(description: str, outputs: list[torch.Tensor]) -> Work:
    """A :class:`Work` that is already done (nothing to communicate)."""
    work = Work(description)
    work._finish(outputs)
    return work
