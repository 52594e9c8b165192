"""Profile one public collective call: Python-level calls per call (exact) and where the time goes
(relative only: valid as a profile on a loaded machine, never as a timing).

Run under MPI, e.g.::

    mpiexec -n 2 python -m mpi4py -m mpicoll.bench.profile_call --bytes 4K --validate on

Rank 0 prints the calls per all-reduce and cProfile's top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys

import numpy as np

from .harness import parse_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpicoll.bench.profile_call", description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", default="4K", help="message size (default 4K, float32)")
    parser.add_argument("--algo", default="auto", help="algorithm (default auto)")
    parser.add_argument("--validate", choices=("on", "off"), default="on", help="the cross-rank check (default on)")
    parser.add_argument("--calls", type=int, default=3000, help="profiled calls (default 3000)")
    parser.add_argument("--top", type=int, default=15, help="functions listed (default 15)")
    args = parser.parse_args(argv)
    from mpi4py import MPI

    import mpicoll

    mpicoll.config.set(validate=args.validate == "on")
    comm = mpicoll.Comm(MPI.COMM_WORLD)
    x = np.ones(parse_size(args.bytes) // 4, np.float32)
    out = np.empty_like(x)
    for _ in range(200):  # warm-up: schedules, scratch buffers, memoized choices
        mpicoll.allreduce(x, algorithm=args.algo, comm=comm, out=out)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(args.calls):
        mpicoll.allreduce(x, algorithm=args.algo, comm=comm, out=out)
    profile.disable()
    if comm.rank == 0:
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text)
        print(f"# {comm.size} ranks, {x.nbytes} bytes, algorithm {args.algo}, validate {args.validate}: "
              f"{stats.total_calls / args.calls:.0f} Python-level calls per allreduce")
        stats.sort_stats("tottime").print_stats(args.top)
        print(text.getvalue())
    comm.free()
    return 0


if __name__ == "__main__":
    sys.exit(main())
