"""The shared benchmark harness: size sweeps, timing, checking, tables and JSON.

Follows nccl-tests: sizes from ``-b`` to ``-e`` by factor ``-f``; ``-w`` warm-up and up to ``-n``
timed iterations back to back; time is the mean per iteration on the slowest rank; ``algbw`` is
size / time and ``busbw`` applies the collective's factor (all-reduce ``2(p-1)/p``) so that numbers
compare with the link bandwidth; ``#wrong`` counts result elements, on all ranks together, that
differ from the exactly known answer. Algorithms are measured side by side, interleaved round by
round, and each reports the median over ``--repeats`` rounds.
"""

from __future__ import annotations

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
    extra: dict[str, Any] = field(default_factory=dict)


def mpi_library() -> str:
    """The MPI library's one-line version string."""
    from mpi4py import MPI

    return MPI.Get_library_version().replace("\x00", "").strip().splitlines()[0].strip()


def time_loop(comm: Comm, body: Callable[[], Any], iterations: int) -> float:
    """Seconds per iteration of ``body`` back to back, on the slowest rank."""
    comm.mpi.Barrier()
    start = time.perf_counter()
    for _ in range(iterations):
        body()
    elapsed = (time.perf_counter() - start) / iterations
    return comm.mpi.allreduce(elapsed, op=_mpi_max())


def _mpi_max() -> Any:
    from mpi4py import MPI

    return MPI.MAX


def choose_iterations(comm: Comm, body: Callable[[], Any], warmup: int, max_iters: int, budget_s: float) -> int:
    """Run the warm-up and pick how many timed iterations fit ``budget_s`` (same on every rank)."""
    per_call = max(time_loop(comm, body, max(1, warmup)), 1e-7)
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
    validate: bool = False


def run_case(case: Case, comm: Comm, opts: Options, emit: Callable[[Record], None]) -> list[Record]:
    """Measure every algorithm of ``case`` at every size; ``emit`` is called per finished row."""
    dtype = np.dtype(opts.dtype)
    records = []
    library = mpi_library()
    for size in opts.sizes:
        prepared = case.prepare(comm, size, dtype, opts.op, opts.root)
        nbytes = prepared.count * dtype.itemsize
        times: dict[str, list[float]] = {a: [] for a in opts.algorithms}
        iters: dict[str, int] = {}
        wrong: dict[str, int] = {}
        with mpicoll.config.override(validate=opts.validate):
            names = list(opts.algorithms)
            for round_ in range(opts.repeats):
                # Interleaved, and rotated each round, so slow phases of the machine and the after-effects
                # of one algorithm on the next hit every algorithm alike.
                shift = round_ % len(names)
                for algo in names[shift:] + names[:shift]:
                    def body(algo: str = algo, prepared: Prepared = prepared) -> Any:
                        return prepared.run(algo)
                    prepared.poison()  # the check below then sees only what this algorithm wrote
                    if algo not in iters:
                        iters[algo] = choose_iterations(comm, body, opts.warmup, opts.iters, opts.budget_s)
                    times[algo].append(time_loop(comm, body, iters[algo]))
                    wrong[algo] = wrong.get(algo, 0) + prepared.wrong()
        for algo in opts.algorithms:
            seconds = float(np.median(times[algo]))
            algbw = nbytes / seconds / 1e9
            record = Record(case.collective, algo, comm.size, nbytes, prepared.count, dtype.name,
                            opts.op if case.has_op else "none", opts.root if case.has_root else -1,
                            seconds * 1e6, algbw, algbw * case.busbw_factor(comm.size), wrong[algo],
                            iters[algo], library)
            records.append(record)
            emit(record)
    return records


HEADER = (f"{'size':>12} {'count':>12} {'type':>8} {'redop':>6} {'root':>5} {'algo':>19} "
          f"{'time(us)':>11} {'algbw':>7} {'busbw':>7} {'#wrong':>7}")


def format_row(r: Record) -> str:
    """One nccl-tests style line."""
    return (f"{r.size_bytes:>12} {r.count:>12} {r.dtype:>8} {r.op:>6} {r.root:>5} {r.algorithm:>19} "
            f"{r.time_us:>11.1f} {r.algbw_GBps:>7.2f} {r.busbw_GBps:>7.2f} {r.wrong:>7}")


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
        "command": " ".join(sys.argv),
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
