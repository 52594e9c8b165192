"""The timeline: where the time of every collective goes, on every rank, as Chrome trace events.

``MPICOLL_TIMELINE=trace.json`` (or :func:`start` / :func:`stop` around a window of steps)
records, on every rank:

- each collective (``cat="collective"``: name, algorithm, bytes, count, dtype, communicator and
  a per-communicator call number ``seq``, the same on every rank for the same call);
- its phases nested inside it (``cat="phase"``): ``agreement`` (the cross-rank argument check),
  ``wire`` (the algorithm's messages and reductions, or the MPI call), ``average``, ``copy out``;
  for compressed all-reduces ``compress``, ``exchange`` (with the inner collectives nested in it)
  and ``decode`` per peer payload;
- the progress engine's queue wait per handle (``cat="queue"``), and gradient buckets
  (``cat="bucket"``: from launch to done, with the bucket index and the step).

Events carry the rank as ``pid`` and the thread as ``tid``. Clocks are aligned at :func:`start`
against rank 0 (the offset of each rank's clock, measured with ping-pongs of minimal round trip),
so a late rank shows as a later start of the same collective. :func:`stop` (called at exit if
the program does not) gathers every rank's events and rank 0 writes one file that Perfetto and
``chrome://tracing`` open. If the job dies (an uncaught exception or the watchdog aborts it),
each rank writes its own events to ``<path>.rank<R>.json`` first.

Off, the cost is one module-global check per collective. Read a trace with
``mpicoll-bench timeline summarize trace.json`` and ``mpicoll-bench timeline plot``.

This module uses the standard library only (mpi4py is imported by :func:`start`), so every layer
may record into it.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import threading
import time
from typing import Any

from .config import config

#: events kept per rank before further ones are dropped (and counted): bounds the memory
MAX_EVENTS = 2_000_000
_PINGS = 8
_clock = time.perf_counter_ns


_THREAD_NAMES: dict[int, str] = {}  # native id -> name of every thread that recorded


class _Thread(threading.local):
    """Per thread: its native id and the stack of its open spans."""

    def __init__(self) -> None:
        self.tid = threading.get_native_id()
        self.stack: list[Span] = []
        _THREAD_NAMES[self.tid] = threading.current_thread().name


class _Recorder:
    """One rank's events, appended from any thread (list.append is atomic under the GIL).

    The hot path stores compact tuples ``(ph, name, cat, t0_ns, t1_ns, tid, args)``; they become
    Chrome trace dicts only when the trace is written."""

    def __init__(self, path: str, mpi_comm: Any, offset_ns: int, origin_ns: int) -> None:
        self.path, self.mpi = path, mpi_comm
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        self.offset_ns, self.origin_ns = offset_ns, origin_ns  # local clock + offset = rank 0's clock
        self.events: list[tuple[Any, ...]] = []
        self.dropped = 0
        self.seq: dict[int, Any] = {}  # per communicator serial: a counter of the collectives started on it
        self.local = _Thread()

    def add(self, event: tuple[Any, ...]) -> None:
        if len(self.events) >= MAX_EVENTS:
            self.dropped += 1
            return
        self.events.append(event)

    def next_seq(self, serial: int) -> int:
        counter = self.seq.get(serial)
        if counter is None:
            counter = self.seq.setdefault(serial, itertools.count())
        return next(counter)  # atomic under the GIL

    def stack(self) -> list[Span]:
        return self.local.stack

    def trace_events(self) -> list[dict[str, Any]]:
        """Every event as a Chrome trace dict (``ts``, ``dur`` in microseconds on rank 0's clock)."""
        shift = self.offset_ns - self.origin_ns
        out = []
        for ph, name, cat, t0, t1, tid, args in self.events:
            event = {"name": name, "cat": cat, "ph": ph, "ts": (t0 + shift) / 1000.0, "pid": self.rank, "tid": tid,
                     "args": args}
            if ph == "X":
                event["dur"] = (t1 - t0) / 1000.0
            else:
                event["s"] = "t"
            out.append(event)
        return out

    def document(self, events: list[dict[str, Any]], offsets_us: list[float], dropped: int) -> dict[str, Any]:
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"producer": "mpicoll.timeline", "ranks": self.size, "clock_offsets_us": offsets_us,
                              "dropped_events": dropped}}

    def metadata(self) -> list[dict[str, Any]]:
        meta = [{"name": "process_name", "ph": "M", "pid": self.rank, "tid": 0, "args": {"name": f"rank {self.rank}"}},
                {"name": "process_sort_index", "ph": "M", "pid": self.rank, "tid": 0,
                 "args": {"sort_index": self.rank}}]
        tids = {event[5] for event in self.events}
        meta += [{"name": "thread_name", "ph": "M", "pid": self.rank, "tid": tid,
                  "args": {"name": _THREAD_NAMES.get(tid, str(tid))}} for tid in sorted(tids)]
        return meta


_recorder: _Recorder | None = None
_atexit_registered = False


class Span:
    """A timed region, written as one complete (``ph="X"``) event when it ends."""

    __slots__ = ("args", "cat", "name", "recorder", "t0", "thread")

    def __init__(self, recorder: _Recorder, name: str, cat: str, args: dict[str, Any]) -> None:
        self.recorder, self.name, self.cat, self.args = recorder, name, cat, args
        self.t0 = 0

    def __enter__(self) -> Span:
        self.thread = thread = self.recorder.local
        stack = thread.stack
        if stack and self.cat != "collective":
            self.args["in"] = stack[-1].name
        stack.append(self)
        self.t0 = _clock()
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        t1 = _clock()
        stack = self.thread.stack
        if stack and stack[-1] is self:
            stack.pop()
        if kind is not None:
            self.args["error"] = getattr(kind, "__name__", str(kind))
        events = self.recorder.events  # add(), inlined: this is the hot path
        if len(events) < MAX_EVENTS:
            events.append(("X", self.name, self.cat, self.t0, t1, self.thread.tid, self.args))
        else:
            self.recorder.dropped += 1


class _Null:
    """What :func:`span` returns when nothing is recorded."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL = _Null()


def recording() -> bool:
    """Whether a timeline is being recorded in this process."""
    return _recorder is not None


def wanted() -> bool:
    """Recording, or about to start (``MPICOLL_TIMELINE`` set and no communicator made yet)."""
    return _recorder is not None or (_pending and bool(config.get("timeline")))


def span(name: str, cat: str = "phase", **args: Any) -> Span | _Null:
    """``with timeline.span("compress"):`` records the block inside the current collective (a no-op
    when not recording, or outside any collective)."""
    r = _recorder
    if r is None or not r.local.stack:  # phases belong to a collective (e.g. not to one begun before start())
        return _NULL
    return Span(r, name, cat, args)


def phase(name: str, t0_ns: int, **args: Any) -> None:
    """Record a phase of this thread's current collective that began at ``t0_ns`` (:func:`now_ns`)
    and ends now: the cheap form of :func:`span` for a flat phase that nothing else nests in
    (two calls instead of four on the hot path of every plain collective)."""
    r = _recorder
    if r is None:
        return
    local = r.local
    stack = local.stack
    if not stack:
        return
    args["in"] = stack[-1].name
    events = r.events
    if len(events) < MAX_EVENTS:
        events.append(("X", name, "phase", t0_ns, _clock(), local.tid, args))
    else:
        r.dropped += 1


def collective(name: str, comm_serial: int, **args: Any) -> Span | _Null:
    """A collective's span, numbered per communicator so that ranks' spans of one call match."""
    r = _recorder
    if r is None:
        return _NULL
    args["comm"], args["seq"], args["nested"] = comm_serial, r.next_seq(comm_serial), bool(r.local.stack)
    return Span(r, name, "collective", args)


_DTYPE_NAMES: dict[Any, str] = {}  # str(dtype) costs microseconds: once per dtype


def call(name: str, comm_serial: int, x: Any, algorithm: str, fn: Any, args: tuple[Any, ...],
         kwargs: dict[str, Any]) -> Any:
    """Run ``fn(*args, **kwargs)``, a public collective on input ``x``, inside its collective span
    (name, algorithm, bytes, count, dtype, communicator, ``seq``): the one-frame form of
    ``with collective(...)`` for the entry decorator, where every microsecond is paid per call."""
    r = _recorder
    if r is None:
        return fn(*args, **kwargs)
    dtype = getattr(x, "dtype", None)
    dname = _DTYPE_NAMES.get(dtype)
    if dname is None:
        dname = _DTYPE_NAMES.setdefault(dtype, "" if dtype is None else str(dtype))
    thread = r.local
    stack = thread.stack
    s = Span(r, name, "collective", {"bytes": getattr(x, "nbytes", 0), "count": getattr(x, "size", 0),
                                     "dtype": dname, "algorithm": algorithm, "comm": comm_serial,
                                     "seq": r.next_seq(comm_serial), "nested": bool(stack)})
    s.thread = thread
    stack.append(s)
    s.t0 = _clock()
    try:
        return fn(*args, **kwargs)
    except BaseException as error:
        s.args["error"] = type(error).__name__
        raise
    finally:
        t1 = _clock()
        if stack and stack[-1] is s:
            stack.pop()
        events = r.events
        if len(events) < MAX_EVENTS:
            events.append(("X", name, "collective", s.t0, t1, thread.tid, s.args))
        else:
            r.dropped += 1


def annotate(**args: Any) -> None:
    """Add ``args`` to the innermost open collective span of this thread (e.g. the resolved algorithm)."""
    r = _recorder
    if r is None:
        return
    stack = r.local.stack
    if stack and stack[-1].cat == "collective":  # the common case: no phase open
        stack[-1].args.update(args)
        return
    for s in reversed(stack):
        if s.cat == "collective":
            s.args.update(args)
            return


def complete(name: str, cat: str, t0_ns: int, t1_ns: int, *, tid: int | None = None, **args: Any) -> None:
    """Record a region measured elsewhere (:func:`now_ns` readings), e.g. a queue wait; on thread
    ``tid`` (a native thread id; default: this thread)."""
    r = _recorder
    if r is None:
        return
    r.add(("X", name, cat, t0_ns, t1_ns, r.local.tid if tid is None else tid, args))


def instant(name: str, cat: str, **args: Any) -> None:
    """Record a moment (``ph="i"``, thread scope), e.g. a gradient bucket becoming ready."""
    r = _recorder
    if r is None:
        return
    t = time.perf_counter_ns()
    r.add(("i", name, cat, t, t, r.local.tid, args))


#: the clock the timeline reads, in ns (for :func:`phase` and :func:`complete`): the builtin itself,
#: not a wrapper, since the hot path of every recorded collective calls it
now_ns = time.perf_counter_ns


def _clock_offset(mpi: Any) -> int:
    """This rank's clock offset to rank 0 (ns): rank 0's reading minus ours at the same instant.

    Rank 0 answers pings from each rank in turn; the ping with the smallest round trip wins and
    the answer is taken to be read halfway through it (error at most half that round trip)."""
    rank, size = mpi.Get_rank(), mpi.Get_size()
    offset = 0
    for peer in range(1, size):
        if rank == 0:
            for _ in range(_PINGS):
                mpi.recv(source=peer, tag=77)
                mpi.send(time.perf_counter_ns(), dest=peer, tag=78)
        elif rank == peer:
            best = None
            for _ in range(_PINGS):
                t_send = time.perf_counter_ns()
                mpi.send(None, dest=0, tag=77)
                remote = mpi.recv(source=0, tag=78)
                t_recv = time.perf_counter_ns()
                if best is None or t_recv - t_send < best[0]:
                    best = (t_recv - t_send, remote - (t_send + t_recv) // 2)
            offset = best[1]
    return offset


def start(path: str | None = None, *, comm: Any = None) -> None:
    """Start recording. Collective over ``comm`` (an mpi4py communicator or :class:`mpicoll.Comm`;
    default ``MPI.COMM_WORLD``): it aligns the clocks, and :func:`stop` gathers over the same ranks.

    Args:
        path: the merged trace's file (rank 0 writes it); default ``config.timeline``.

    Raises:
        ArgumentError: no path, or a timeline is already being recorded.
    """
    global _recorder, _atexit_registered
    from .errors import ArgumentError

    path = path or config.get("timeline")
    if not path:
        raise ArgumentError("timeline.start: give a path, or set MPICOLL_TIMELINE")
    if _recorder is not None:
        raise ArgumentError(f"timeline.start: already recording to {_recorder.path}; stop() it first")
    from mpi4py import MPI

    base = getattr(comm, "mpi", comm) or MPI.COMM_WORLD
    mpi = base.Dup()
    offset = _clock_offset(mpi)
    origin = mpi.bcast(time.perf_counter_ns() if mpi.Get_rank() == 0 else None, root=0)
    _recorder = _Recorder(os.fspath(path), mpi, offset, origin)
    if not _atexit_registered:
        atexit.register(_stop_at_exit)
        _atexit_registered = True


def stop() -> str | None:
    """Stop recording; rank 0 writes the merged trace. Collective over the ranks of :func:`start`.

    Returns:
        The trace's path on rank 0, ``None`` elsewhere (and when nothing was being recorded).
    """
    global _recorder
    r = _recorder
    if r is None:
        return None
    _recorder = None
    mine = r.metadata() + r.trace_events()
    gathered = r.mpi.gather((mine, r.offset_ns / 1000.0, r.dropped), root=0)
    r.mpi.Free()
    if r.rank != 0:
        return None
    events = [e for part in gathered for e in part[0]]
    document = r.document(events, [part[1] for part in gathered], sum(part[2] for part in gathered))
    _write(r.path, document)
    return r.path


def dump_local() -> str | None:
    """Write this rank's events alone to ``<path>.rank<R>.json`` (when the job is dying: no
    collective is possible). Returns that path, or ``None`` when nothing is recorded."""
    global _recorder
    r = _recorder
    if r is None:
        return None
    _recorder = None
    path = f"{r.path}.rank{r.rank}.json"
    _write(path, r.document(r.metadata() + r.trace_events(), [r.offset_ns / 1000.0], r.dropped))
    return path


def _write(path: str, document: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(document, f, separators=(",", ":"))
    os.replace(tmp, path)


def _stop_at_exit() -> None:
    """At interpreter exit: merge if MPI still runs, else keep this rank's events in its own file."""
    if _recorder is None:
        return
    try:
        from mpi4py import MPI

        if MPI.Is_finalized():
            dump_local()
            return
        stop()
    except Exception:  # exiting: keep what we can rather than lose the trace
        dump_local()


def autostart(mpi_comm: Any) -> None:
    """Start recording over ``mpi_comm`` if ``MPICOLL_TIMELINE`` is set and nothing records yet
    (called once, where mpicoll makes its first communicator)."""
    global _pending
    if not _pending:
        return
    _pending = False  # from now on an idle timeline costs one global check per collective
    if _recorder is None and config.get("timeline"):
        start(config.get("timeline"), comm=mpi_comm)


_pending = True  # no communicator made yet: MPICOLL_TIMELINE may still start a recording

__all__ = ["annotate", "call", "collective", "complete", "dump_local", "instant", "now_ns", "phase", "recording",
           "span", "start", "stop", "wanted"]

