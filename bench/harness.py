"""The shared benchmark harness: size sweeps, timing, checking, tables and JSON.

Follows nccl-tests: sizes from ``-b`` to ``-e`` by factor ``-f``; ``-w`` warm-up and up to ``-n``
timed iterations back to back; time is the mean per iteration on the slowest rank; ``algbw`` is
size / time and ``busbw`` applies the collective's factor (all-reduce ``2(p-1)/p``) so that numbers
compare with the link bandwidth; ``#wrong`` counts result elements, on all ranks together, that
differ from the exactly known answer. Algorithms are measured side by side, interleaved round by
round, and each reports the median over ``--repeats`` rounds.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import mpicoll
from mpicoll.transport import Comm

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``"4K"`` -> 4096, ``"256M"`` -> 268435456, ``"100"`` -> 100 (binary multiples)."""
    text = text.strip().upper().removesuffix("B")
    unit = text[-1:] if text[-1:] in "KMG" else ""
    try:
        return int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
    except ValueError:
        raise ValueError(f"bad size {text!r}: use a number with an optional K, M or G suffix") from None


def format_size(nbytes: int) -> str:
    """The inverse of :func:`parse_size` for whole multiples."""
    for unit in ("G", "M", "K"):
        if nbytes >= _UNITS[unit] and nbytes % _UNITS[unit] == 0:
            return f"{nbytes // _UNITS[unit]}{unit}"
    return str(nbytes)


def sweep(begin: int, end: int, factor: float) -> list[int]:
    """Sizes ``begin, begin*factor, ...`` up to ``end`` inclusive."""
    if begin <= 0 or end < begin or factor <= 1:
        raise ValueError("need 0 < begin <= end and factor > 1")
    sizes, size = [], begin
    while size <= end:
        sizes.append(int(size))
        size = size * factor
    return sizes


@dataclass
class Prepared:
    """One collective, set up for one message size.

    ``poison()`` fills the result buffer with impossible values, ``run(algorithm)`` runs one
    call, ``wrong()`` counts (collectively) the result elements that differ from the answer.
    """

    count: int
    run: Callable[[str], Any]
    wrong: Callable[[], int]
    poison: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Case:
    """How to benchmark one collective (one small module per collective defines one)."""

    collective: str
    busbw_factor: Callable[[int], float]
    prepare: Callable[[Comm, int, np.dtype, str, int], Prepared]
    has_op: bool = True
    has_root: bool = False
    #: baselines ``--algo`` also accepts beside mpicoll's algorithms (e.g. the bare MPI call)
    baselines: tuple[str, ...] = ()


@dataclass
class Record:
    """One row of results; the JSON schema of ``--json`` output."""

    collective: str
    algorithm: str
    nranks: int
    size_bytes: int
    count: int
    dtype: str
    op: str
    root: int
    time_us: float
    algbw_GBps: float
    busbw_GBps: float
    wrong: int
    iterations: int
    mpi_library: str
    avg_us: float = 0.0  # per-iteration time averaged over ranks (OSU's "Avg Latency")
    min_us: float = 0.0  # fastest rank
    max_us: float = 0.0  # slowest rank (= time_us)
    timing: str = "back-to-back"
    compressor: str = "none"
    #: with ``--stats``: min/p50/p95/p99/max over every timed iteration (each the slowest rank's), in us
    iter_us: dict[str, float] = field(default_factory=dict)
    #: slowest minus fastest rank's mean time, in % of the mean over ranks (the per-rank spread)
    spread_pct: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def mpi_library() -> str:
    """The MPI library's one-line version string."""
    from mpi4py import MPI

    return MPI.Get_library_version().replace("\x00", "").strip().splitlines()[0].strip()


TIMINGS = ("back-to-back", "barrier")


@dataclass(frozen=True)
class Timing:
    """Seconds per iteration: on the slowest rank (the reported time), averaged over ranks, fastest rank."""

    max_s: float
    avg_s: float
    min_s: float
    #: with ``stats``: every iteration's time on the slowest rank for that iteration (seconds)
    per_iter_s: np.ndarray | None = None


def time_loop(comm: Comm, body: Callable[[], Any], iterations: int, method: str = "back-to-back",
              stats: bool = False) -> Timing:
    """Time ``iterations`` calls of ``body`` on every rank.

    ``back-to-back`` (nccl-tests): one barrier, then the calls in a row, total / iterations; calls
    may overlap across ranks, as they do in an application. ``barrier`` (OSU's latency tests):
    a barrier before every call, each call timed alone, so no call starts before all finished
    the previous one. ``stats``: also read the clock around every call (two clock reads per
    iteration) and keep each iteration's time on its slowest rank, for percentiles.
    """
    clock = time.perf_counter
    samples = np.empty(iterations) if stats else None
    if method == "barrier":
        elapsed = 0.0
        for i in range(iterations):
            comm.mpi.Barrier()
            start = clock()
            body()
            took = clock() - start
            elapsed += took
            if samples is not None:
                samples[i] = took
        elapsed /= iterations
    else:
        comm.mpi.Barrier()
        start = clock()
        if samples is None:
            for _ in range(iterations):
                body()
        else:
            for i in range(iterations):
                t0 = clock()
                body()
                samples[i] = clock() - t0
        elapsed = (clock() - start) / iterations
    per_rank = comm.mpi.allgather(elapsed)
    if samples is not None:
        from mpi4py import MPI

        comm.mpi.Allreduce(MPI.IN_PLACE, samples, op=MPI.MAX)
    return Timing(max(per_rank), sum(per_rank) / len(per_rank), min(per_rank), samples)


def choose_iterations(comm: Comm, body: Callable[[], Any], warmup: int, max_iters: int, budget_s: float) -> int:
    """Run the warm-up and pick how many timed iterations fit ``budget_s`` (same on every rank)."""
    per_call = max(time_loop(comm, body, max(1, warmup)).max_s, 1e-7)
    return int(max(1, min(max_iters, math.ceil(budget_s / per_call))))


@dataclass
class Options:
    """Sweep options shared by every collective subcommand."""

    sizes: Sequence[int]
    algorithms: Sequence[str]
    dtype: str = "float32"
    op: str = "sum"
    root: int = 0
    warmup: int = 5
    iters: int = 1000
    budget_s: float = 0.5
    repeats: int = 3
    validate: bool = True  # as users get it
    timing: str = "back-to-back"
    stats: bool = False


def run_case(case: Case, comm: Comm, opts: Options, emit: Callable[[Record], None],
             progress: Callable[[], None] | None = None) -> list[Record]:
    """Measure every algorithm of ``case`` at every size; ``emit`` is called per finished row,
    ``progress`` after every measurement."""
    dtype = np.dtype(opts.dtype)
    records = []
    library = mpi_library()
    for size in opts.sizes:
        prepared = case.prepare(comm, size, dtype, opts.op, opts.root)
        nbytes = prepared.count * dtype.itemsize
        times: dict[str, list[Timing]] = {a: [] for a in opts.algorithms}
        iters: dict[str, int] = {}
        wrong: dict[str, int] = {}
        with mpicoll.config.override(validate=opts.validate):
            names = list(opts.algorithms)
            twins = any(_variant(a)[1] for a in names)  # --check-cost: settings change between loops
            for round_ in range(opts.repeats):
                # Interleaved, and rotated each round, so slow phases of the machine and the after-effects
                # of one algorithm on the next hit every algorithm alike.
                shift = round_ % len(names)
                for algo in names[shift:] + names[:shift]:
                    run_as, unchecked = _variant(algo)

                    def body(run_as: str = run_as, prepared: Prepared = prepared) -> Any:
                        return prepared.run(run_as)
                    prepared.poison()  # the check below then sees only what this algorithm wrote
                    # an ``:unchecked`` twin: the check off for its whole measurement (set around the
                    # loop, not per call: a settings change makes planned repeats plan again)
                    with mpicoll.config.override(validate=False) if unchecked else contextlib.nullcontext():
                        if algo not in iters:
                            iters[algo] = choose_iterations(comm, body, opts.warmup, opts.iters, opts.budget_s)
                        elif twins:  # the settings changed since its last loop: its plan is made again, untimed
                            body()
                        times[algo].append(time_loop(comm, body, iters[algo], opts.timing, opts.stats))
                    wrong[algo] = wrong.get(algo, 0) + prepared.wrong()
                    if progress is not None:
                        progress()
        for algo in opts.algorithms:
            seconds = float(np.median([t.max_s for t in times[algo]]))
            algbw = nbytes / seconds / 1e9
            record = Record(case.collective, algo, comm.size, nbytes, prepared.count, dtype.name,
                            opts.op if case.has_op else "none", opts.root if case.has_root else -1,
                            seconds * 1e6, algbw, algbw * case.busbw_factor(comm.size), wrong[algo],
                            iters[algo], library,
                            avg_us=float(np.median([t.avg_s for t in times[algo]])) * 1e6,
                            min_us=float(np.median([t.min_s for t in times[algo]])) * 1e6,
                            max_us=seconds * 1e6, timing=opts.timing, iter_us=_iteration_stats(times[algo]))
            record.spread_pct = 100.0 * (record.max_us - record.min_us) / record.avg_us if record.avg_us > 0 else 0.0
            records.append(record)
            emit(record)
    return records


#: the suffix of ``--check-cost`` 's twins: the algorithm timed with the argument check off
UNCHECKED = ":unchecked"


def _variant(algo: str) -> tuple[str, bool]:
    """The algorithm a bench name runs, and whether it is an :data:`UNCHECKED` twin."""
    return (algo[: -len(UNCHECKED)], True) if algo.endswith(UNCHECKED) else (algo, False)


def _iteration_stats(timings: Sequence[Timing]) -> dict[str, float]:
    """min/p50/p95/p99/max (us) over the iterations of every round, when they were kept."""
    kept = [t.per_iter_s for t in timings if t.per_iter_s is not None]
    if not kept:
        return {}
    us = np.concatenate(kept) * 1e6
    values = np.percentile(us, [0, 50, 95, 99, 100])
    return dict(zip(("min", "p50", "p95", "p99", "max"), map(float, values), strict=True))


STATS_HEADER = f" {'min':>9} {'p50':>9} {'p95':>9} {'p99':>9} {'max':>9} {'spread':>7}"

HEADER = (f"{'size':>12} {'count':>12} {'type':>8} {'redop':>6} {'root':>5} {'algo':>19} "
          f"{'time(us)':>11} {'algbw':>7} {'busbw':>7} {'#wrong':>7}")


def format_row(r: Record) -> str:
    """One nccl-tests style line."""
    line = (f"{r.size_bytes:>12} {r.count:>12} {r.dtype:>8} {r.op:>6} {r.root:>5} {r.algorithm:>19} "
            f"{r.time_us:>11.1f} {r.algbw_GBps:>7.2f} {r.busbw_GBps:>7.2f} {r.wrong:>7}")
    if r.iter_us:  # --stats: per-iteration percentiles (us) and the per-rank spread
        line += "".join(f" {r.iter_us[k]:>9.1f}" for k in ("min", "p50", "p95", "p99", "max"))
        line += f" {r.spread_pct:>6.1f}%"
    return line


def format_osu(records: Sequence[Record], collective: str) -> str:
    """OSU micro-benchmark style: a section per algorithm with Size / Avg / Min / Max latency / Iterations."""
    lines = [f"# OSU MPI-style {collective} latency test (mpicoll), {records[0].nranks if records else 0} ranks, "
             f"timing: {records[0].timing if records else ''}"]
    for algo in dict.fromkeys(r.algorithm for r in records):
        lines.append(f"# algorithm: {algo}")
        lines.append(f"{'# Size':<10}{'Avg Latency(us)':>18}{'Min Latency(us)':>18}{'Max Latency(us)':>18}"
                     f"{'Iterations':>12}")
        for r in (r for r in records if r.algorithm == algo):
            lines.append(f"{r.size_bytes:<10}{r.avg_us:>18.2f}{r.min_us:>18.2f}{r.max_us:>18.2f}{r.iterations:>12}")
    return "\n".join(lines)


CSV_FIELDS = ["collective", "algorithm", "compressor", "nranks", "size_bytes", "count", "dtype", "op", "root",
              "time_us", "avg_us", "min_us", "max_us", "algbw_GBps", "busbw_GBps", "wrong", "iterations", "timing",
              "mpi_library"]


def write_csv(path: str, comm: Comm, records: Sequence[Record], run_meta: dict[str, Any]) -> None:
    """One row per record, with the run's command line and library in comment lines first (rank 0)."""
    import csv

    if comm.rank != 0:
        return
    with open(path, "w", newline="", encoding="utf-8") as fh:
        fh.write(f"# command: {run_meta['command']}\n# {run_meta['nranks']} ranks on {run_meta['nhosts']} host(s), "
                 f"{run_meta['mpi_library']}\n")
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow(asdict(r))


def command_line() -> str:
    """The command as the user typed it (``python -m mpicoll.bench ...`` or ``mpicoll-bench ...``)."""
    import shlex
    from pathlib import Path

    program = Path(sys.argv[0])
    head = ["python", "-m", f"mpicoll.bench.{program.stem}" if program.parent.name == "bench" and
            program.name != "__main__.py" else "mpicoll.bench"] if program.suffix == ".py" else [program.name]
    return shlex.join([*head, *sys.argv[1:]])


def meta(comm: Comm, opts: Options | None = None) -> dict[str, Any]:
    """What the JSON output records about the run. Collective (gathers host names)."""
    from mpi4py import MPI

    hosts = comm.mpi.allgather(MPI.Get_processor_name())
    return {
        "mpicoll_version": mpicoll.__version__,
        "mpi_library": mpi_library(),
        "nranks": comm.size,
        "nhosts": len(set(hosts)),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "command": command_line(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "timing": "back-to-back iterations, mean per iteration on the slowest rank, median of repeats",
        "config": mpicoll.config.as_dict(),
        "options": None if opts is None else {k: v for k, v in asdict(opts).items() if k != "sizes"},
    }


def write_json(path: str, comm: Comm, records: Sequence[Record], run_meta: dict[str, Any]) -> None:
    """Write records and run metadata (from :func:`meta`) as JSON, on rank 0 only."""
    if comm.rank != 0:
        return
    document = {"meta": run_meta, "results": [asdict(r) for r in records]}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(document, fh, indent=1)
        fh.write("\n")


def say(comm: Comm, line: str) -> None:
    """Print one line on rank 0 (one write, so lines of different ranks never interleave)."""
    if comm.rank == 0:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
