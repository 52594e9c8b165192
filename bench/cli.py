"""``python -m mpicoll.bench`` / ``mpicoll-bench``: the benchmark suite's command line.

Run under MPI, e.g.::

    mpiexec -n 2 python -m mpicoll.bench allreduce -b 4K -e 256M -f 4 \\
        --algo ring,tree,recursive_doubling,rabenseifner,native --json out.json

Only rank 0 prints. An error on any rank aborts the whole job (no rank is left hanging).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from .harness import (
    HEADER,
    STATS_HEADER,
    UNCHECKED,
    Case,
    Options,
    Record,
    format_osu,
    format_row,
    format_size,
    meta,
    parse_size,
    run_case,
    say,
    sweep,
    write_csv,
)
from .harness import write_json as write_json_file
from .progress import progress_bar


def _cases() -> dict[str, Case]:
    from . import allgather, allreduce, broadcast, reduce, reduce_scatter, sendrecv

    modules = (allreduce, reduce_scatter, allgather, broadcast, reduce, sendrecv)
    return {m.CASE.collective: m.CASE for m in modules}


def _add_sweep_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-b", "--minbytes", default="4K", help="smallest message size (default 4K)")
    p.add_argument("-e", "--maxbytes", default="64M", help="largest message size (default 64M)")
    p.add_argument("-m", "--message-size", metavar="MIN:MAX", default=None,
                   help="OSU style size range, same as -b MIN -e MAX (with -f 2 unless given)")
    p.add_argument("-f", "--stepfactor", type=float, default=None, help="size multiplier (default 4; 2 with -m)")
    p.add_argument("-n", "-i", "--iters", type=int, default=1000,
                   help="at most this many timed iterations per measurement (default 1000; see --budget)")
    p.add_argument("-w", "-x", "--warmup_iters", type=int, default=5, help="warm-up iterations (default 5)")
    p.add_argument("--timing", choices=("back-to-back", "barrier"), default="back-to-back",
                   help="back-to-back calls (nccl-tests, default) or a barrier before each call (OSU)")
    p.add_argument("--osu", action="store_true", help="print OSU-style latency tables (Size, Avg/Min/Max)")
    p.add_argument("--csv", metavar="PATH", help="also write the results as CSV")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-d", "--datatype", default="float32",
                   help="float16, float32, float64, int32 or int64 (default float32)")
    p.add_argument("-o", "--op", default="sum", help="sum, prod, min, max or avg (default sum)")
    p.add_argument("-r", "--root", type=int, default=0, help="root rank of broadcast/reduce (default 0)")
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds over all algorithms; each reports its median (default 3)")
    p.add_argument("--budget", type=float, default=0.5,
                   help="at most about this many seconds per measurement (default 0.5): fewer iterations "
                        "for large messages")
    p.add_argument("--validate", action=argparse.BooleanOptionalAction, default=True,
                   help="the cross-rank argument check inside the timed loop: on by default, as users get it "
                        "(--no-validate times the algorithms alone; tune always does)")
    p.add_argument("--check-cost", action="store_true",
                   help="time each algorithm also with the argument check off (an ':unchecked' twin in the "
                        "same interleaved rounds), so the check's cost is a ratio measured side by side")
    p.add_argument("--stats", action="store_true",
                   help="also report min/p50/p95/p99/max over the timed iterations (us, each iteration's "
                        "slowest rank) and the per-rank spread; JSON carries them")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpicoll-bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _cases():
        p = sub.add_parser(name, help=f"benchmark {name}")
        _add_sweep_options(p)
        p.add_argument("--algo", default=None,
                       help="comma-separated algorithms (default: all registered, plus auto)")
        p.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                       help="skip the point-to-point Sendrecv row measured at each size")
        if name == "allreduce":
            p.add_argument("--in-place-shared", action="store_true",
                           help="run in place on arrays from mpicoll.shared_empty (shm's zero-copy case); "
                                "use with -o max, which repeated calls keep exact")
    p = sub.add_parser("tune", help="measure every algorithm and write the table algorithm='auto' reads")
    _add_sweep_options(p)
    p.add_argument("--collectives", default="allreduce", help="comma-separated collectives to tune")
    p.add_argument("--out", default=None, help="table path (default: the user table, see `mpicoll info`)")
    from .compress import add_parser as add_compress
    from .compressed import add_parser as add_compressed
    from .costmodel import add_parser as add_costmodel
    from .overlap import add_parser as add_overlap
    from .plot import add_parser as add_plot
    from .report import add_parser as add_report
    from .soak import add_parser as add_soak
    from .timeline import add_parser as add_timeline
    from .torch_step import add_parser as add_torch_step

    add_report(sub)
    add_soak(sub)
    add_plot(sub)
    add_compress(sub)
    add_compressed(sub)
    add_overlap(sub)
    add_torch_step(sub)
    add_timeline(sub)
    add_costmodel(sub)
    return parser


def _sizes(args: argparse.Namespace) -> list[int]:
    low, high, factor = args.minbytes, args.maxbytes, args.stepfactor
    if args.message_size:
        low, _, high = args.message_size.partition(":")
        high = high or low
        factor = factor or 2
    return sweep(parse_size(low), parse_size(high), factor or 4)


def _options(args: argparse.Namespace, algorithms: Sequence[str]) -> Options:
    return Options(
        sizes=_sizes(args), algorithms=list(algorithms), dtype=args.datatype, op=args.op, root=args.root,
        warmup=args.warmup_iters, iters=args.iters, budget_s=args.budget, repeats=args.repeats,
        validate=args.validate, timing=args.timing, stats=getattr(args, "stats", False),
    )


def _algorithms(case: Case, requested: str | None) -> list[str]:
    if case.collective == "sendrecv":
        return ["sendrecv"]
    from mpicoll.collectives import algorithm_names

    names = algorithm_names(case.collective)
    if requested is None:
        return [*names, "auto"]
    chosen = [a.strip() for a in requested.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in (*names, "auto", *case.baselines)]
    if unknown:
        raise SystemExit(f"unknown algorithm(s) {unknown} for {case.collective}; known: "
                         f"{[*names, 'auto', *case.baselines]}")
    return chosen


def run_collective(args: argparse.Namespace, comm: Any) -> list[Record]:
    cases = _cases()
    case = cases[args.command]
    if getattr(args, "in_place_shared", False):
        from . import allreduce

        allreduce.IN_PLACE_SHARED = True
    algorithms = _algorithms(case, args.algo)
    if getattr(args, "check_cost", False):
        if not args.validate:
            raise SystemExit("--check-cost times each algorithm with the check on and off: drop --no-validate")
        algorithms += [a + UNCHECKED for a in algorithms if a not in case.baselines]
    opts = _options(args, algorithms)
    run_meta = meta(comm, opts)
    say(comm, f"# mpicoll-bench {case.collective}: {comm.size} ranks on {run_meta['nhosts']} host(s), "
              f"{run_meta['mpi_library']}")
    say(comm, f"# timing: {opts.timing}, mean per iteration on the slowest rank, median of {opts.repeats} rounds; "
              f"validate={'on' if opts.validate else 'off'} in the timed loop; "
              f"segment_bytes={format_size(run_meta['config']['segment_bytes'])}")
    ceiling = cases["sendrecv"] if args.ceiling and case.collective != "sendrecv" else None
    emit = (lambda r: None) if args.osu else (lambda r: say(comm, format_row(r)))
    if not args.osu:
        say(comm, HEADER + (STATS_HEADER if opts.stats else ""))
    records: list[Record] = []
    steps = len(opts.sizes) * opts.repeats * (len(opts.algorithms) + (1 if ceiling else 0))
    with progress_bar(comm, steps, case.collective, args.quiet) as advance:
        for size in opts.sizes:
            step = Options(**{**opts.__dict__, "sizes": [size]})
            records += run_case(case, comm, step, emit, advance)
            if ceiling is not None:
                ceiling_opts = Options(**{**step.__dict__, "algorithms": ["sendrecv"]})
                records += run_case(ceiling, comm, ceiling_opts, emit, advance)
    if args.osu:
        say(comm, format_osu([r for r in records if r.collective == case.collective], case.collective))
    wrong = sum(r.wrong for r in records)
    say(comm, f"# out of bounds values : {wrong} {'OK' if wrong == 0 else 'FAILED'}")
    if args.json:
        write_json_file(args.json, comm, records, run_meta)
        say(comm, f"# wrote {args.json}")
    if args.csv:
        write_csv(args.csv, comm, records, run_meta)
        say(comm, f"# wrote {args.csv}")
    return records


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "report":  # reads files only: no MPI
        from .report import run_report

        return run_report(args)
    if args.command == "plot":  # reads files only: no MPI
        from .plot import run_plot

        return run_plot(args)
    if args.command == "timeline" and args.action != "overhead":  # reads files only: no MPI
        from .timeline import run_timeline

        return run_timeline(args)
    if args.command in ("predict", "model-report"):  # arithmetic on files: no MPI
        from .costmodel import run_model_report, run_predict

        return run_predict(args) if args.command == "predict" else run_model_report(args)
    if args.command == "compress":  # one process, no MPI
        from .compress import run_compress

        return run_compress(args)
    from mpi4py import MPI

    from mpicoll.transport import Comm

    comm = Comm(MPI.COMM_WORLD)
    try:
        if args.command == "tune":
            from .tune import run_tune

            run_tune(args, comm, _cases(), _options)
            return 0
        if args.command == "soak":
            from .soak import run_soak

            return run_soak(args, comm)
        if args.command == "torch-step":
            from .torch_step import run_torch_step

            return run_torch_step(args, comm)
        if args.command == "timeline":
            from .timeline import run_overhead

            return run_overhead(args, comm)
        if args.command in ("probe", "model-check"):
            from .costmodel import run_model_check, run_probe

            return run_probe(args, comm) if args.command == "probe" else run_model_check(args, comm)
        if args.command == "overlap":
            from .overlap import run_overlap

            return run_overlap(args, comm)
        if args.command == "compressed-allreduce":
            from .compressed import run_compressed

            return run_compressed(args, comm)
        records = run_collective(args, comm)
        return 0 if all(r.wrong == 0 for r in records) else 1
    except SystemExit:
        raise
    except BaseException:
        sys.stderr.write(f"rank {comm.rank}: mpicoll-bench failed:\n{traceback.format_exc()}")
        sys.stderr.flush()
        if comm.size > 1:
            MPI.COMM_WORLD.Abort(1)  # never leave the other ranks waiting in a collective
        return 1
