"""Count the MPI calls one all-reduce makes: collective rounds, not times (valid on a loaded machine).

Run under MPI, e.g.::

    mpiexec -n 3 python -m mpicoll.bench.rounds [--count 65536] [--json out.json]

Every call mpicoll makes goes through ``Comm.mpi``; here that attribute is replaced by a proxy
that counts, per rank, each MPI call by name and by the mpicoll function that made it (the caller
outside mpi4py). A *collective round* is one MPI collective call (``Allgather``, ``Alltoallv``,
``allgather``, ...) or one argument agreement (an allgather of a few int64 per rank that mpicoll
runs itself, along recursive doubling's schedule, :mod:`mpicoll.collectives.inband`; a small
all-reduce rides in it); point-to-point messages are counted as the sends of this rank
(``Isend``, ``Send``, ``Sendrecv``). Each case runs once to warm up (schedules, scratch buffers) and is then
counted on its second call. Rank 0 prints one row per case: the collective rounds by purpose
and the messages sent.

``auto``'s table is the bundled one except that every allgather is ``native`` (``--keep-table``
keeps the table as it is): the compressed paths' sub-step allgathers are then one MPI call each,
whatever their size, instead of ``p-1`` ring steps for large payloads, so that rounds compare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from typing import Any

import numpy as np

COLLECTIVE_CALLS = {
    "Allgather", "Allgatherv", "Allreduce", "Alltoall", "Alltoallv", "Alltoallw", "Bcast", "Reduce",
    "Reduce_scatter", "Reduce_scatter_block", "Barrier", "Gather", "Gatherv", "Scatter", "Scatterv", "Scan",
    "Exscan", "allgather", "allreduce", "alltoall", "bcast", "gather", "scatter", "reduce", "barrier",
    "agreement exchange",
}
SEND_CALLS = {"Isend", "Send", "Sendrecv", "Ssend", "Issend", "Rsend", "send", "isend", "sendrecv"}


class CountingComm:
    """Delegates to an mpi4py communicator and counts the calls made through it."""

    def __init__(self, mpi: Any) -> None:
        self._mpi = mpi
        self.calls: Counter[tuple[str, str]] = Counter()
        self.counting = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._mpi, name)
        if not callable(target) or not (name in COLLECTIVE_CALLS or name in SEND_CALLS):
            return target

        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.counting:
                self.calls[(name, _caller())] += 1
            return target(*args, **kwargs)

        return counted


def _caller() -> str:
    """``module.function`` of the mpicoll code that made the MPI call."""
    frame = sys._getframe(2)
    while frame is not None and "mpicoll" not in frame.f_globals.get("__name__", ""):
        frame = frame.f_back
    if frame is None:
        return "?"
    module = frame.f_globals.get("__name__", "?").rpartition(".")[2]
    return f"{module}.{frame.f_code.co_name}"


PURPOSES = (  # (purpose, callers): the first match names a collective call's purpose
    ("agreement", ("validate.", "_validate.")),
    ("error verdict", ("_agree_on_errors", "agree_on_errors")),
)


def purpose(caller: str) -> str:
    for name, prefixes in PURPOSES:
        if any(p in caller for p in prefixes):
            return name
    return "data"


def cases(count: int) -> list[tuple[str, Any]]:
    """(label, zero-argument call) of every all-reduce counted."""
    import mpicoll
    from mpicoll import compression

    x = np.arange(count, dtype=np.float32) % 7
    matrix = x.reshape(256, -1) if count % 256 == 0 else x

    def compressed(name: str, algorithm: str, data: Any = x, **params: Any) -> Any:
        codec = compression.get(name, **params)
        return lambda comm: mpicoll.compressed_allreduce(data, codec, key=name, comm=comm, algorithm=algorithm)

    return [
        ("allreduce auto", lambda comm: mpicoll.allreduce(x, comm=comm)),
        ("allreduce recursive_doubling", lambda comm: mpicoll.allreduce(x, algorithm="recursive_doubling", comm=comm)),
        ("allreduce ring", lambda comm: mpicoll.allreduce(x, algorithm="ring", comm=comm)),
        ("allreduce native", lambda comm: mpicoll.allreduce(x, algorithm="native", comm=comm)),
        ("sparse_allgather (topk)", compressed("topk", "sparse_allgather", ratio=0.01)),
        ("sparse_rd (topk)", compressed("topk", "sparse_rd", ratio=0.01)),
        ("two_phase (int8)", compressed("int8", "two_phase")),
        ("two_phase (topk: sizes vary)", compressed("topk", "two_phase", ratio=0.01)),
        ("allgather_decode (int8)", compressed("int8", "allgather_decode")),
        ("powersgd (rank 4)", compressed("powersgd", "powersgd", data=matrix, rank=4)),
        ("fp16 on ring", compressed("fp16", "ring")),
    ]


def count(comm: Any, call: Any) -> Counter[tuple[str, str]]:
    from mpicoll.collectives.internal import inband

    proxy: CountingComm = comm.mpi
    call(comm)  # warm-up: schedules and scratch buffers are made on first use
    proxy.calls.clear()
    real = inband.Route.run  # every agreement exchange, planned or not, runs a Route

    def agreement(*args: Any, **kwargs: Any) -> Any:  # one round, whatever its messages (counted as sends)
        proxy.calls[("agreement exchange", "validate.exchange")] += 1
        return real(*args, **kwargs)

    proxy.counting = True
    inband.Route.run = agreement
    try:
        call(comm)
    finally:
        proxy.counting = False
        inband.Route.run = real
    return Counter(proxy.calls)


def summarize(calls: Counter[tuple[str, str]]) -> dict[str, Any]:
    by_purpose: Counter[str] = Counter()
    sends = 0
    for (name, caller), n in calls.items():
        if name in COLLECTIVE_CALLS:
            by_purpose[purpose(caller)] += n
        else:
            sends += n
    return {"collective_rounds": sum(by_purpose.values()), "by_purpose": dict(by_purpose), "sends": sends,
            "calls": {f"{name} <- {caller}": n for (name, caller), n in sorted(calls.items())}}


def native_allgather_table(rank: int) -> str:
    """Write the bundled ``auto`` table with every allgather ``native``; return its path (one per rank)."""
    from mpicoll.collectives.internal import auto

    table = json.loads(auto.bundled_table_text())
    table["allgather"] = {"default": [[None, "native"]]}
    path = os.path.join(tempfile.gettempdir(), f"mpicoll-rounds-table-{os.getpid()}-{rank}.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(auto.format_table(table))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpicoll.bench.rounds", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1 << 16, help="float32 elements per rank (default 65536)")
    parser.add_argument("--json", metavar="PATH", help="write every rank-0 count, call by call, here")
    parser.add_argument("--keep-table", action="store_true", help="keep auto's table (allgathers may run as rings)")
    args = parser.parse_args(argv)
    from mpi4py import MPI

    import mpicoll

    table = "" if args.keep_table else native_allgather_table(MPI.COMM_WORLD.Get_rank())
    if table:
        mpicoll.config.set(auto_table=table)
    comm = mpicoll.Comm(MPI.COMM_WORLD)
    comm.mpi = CountingComm(comm.mpi)
    rows = {}
    for label, call in cases(args.count):
        rows[label] = summarize(count(comm, call))
    if comm.rank == 0:
        print(f"# {comm.size} ranks, {args.count} float32 elements, calls of rank 0 (second call of each)")
        print(f"# {'case':<30} {'rounds':>6}  {'agreement':>9} {'data':>5} {'verdict':>7}  {'sends':>5}")
        for label, row in rows.items():
            p = row["by_purpose"]
            print(f"  {label:<30} {row['collective_rounds']:>6}  {p.get('agreement', 0):>9} {p.get('data', 0):>5} "
                  f"{p.get('error verdict', 0):>7}  {row['sends']:>5}", flush=True)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"ranks": comm.size, "count": args.count, "cases": rows}, f, indent=1)
    comm.mpi = comm.mpi._mpi
    comm.free()
    if table:
        os.remove(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
