"""``mpicoll-bench tune``: measure every algorithm and write the table ``algorithm="auto"`` reads.

For each collective and size it runs all registered algorithms side by side, picks the fastest,
and merges runs of sizes with the same winner into rules ``[max_bytes, algorithm]`` for the
current rank count. Entries for other rank counts and collectives in the table are kept.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from mpicoll.collectives import algorithm_names
from mpicoll.collectives.internal import auto

from .harness import Case, Options, Record, format_row, run_case, say
from .model import fit


def rules_from(records: list[Record]) -> list[list[Any]]:
    """``[[max_bytes, winner], ..., [None, winner]]`` from measured records of one collective."""
    best: dict[int, Record] = {}
    for r in records:
        if r.size_bytes not in best or r.time_us < best[r.size_bytes].time_us:
            best[r.size_bytes] = r
    rules: list[list[Any]] = []
    for size in sorted(best):
        winner = best[size].algorithm
        if rules and rules[-1][1] == winner:
            rules[-1][0] = size
        else:
            rules.append([size, winner])
    if rules:
        rules[-1][0] = None
    return rules


def report_model(comm: Any, records: list[Record]) -> dict[str, Any] | None:
    """Fit the alpha-beta-gamma model to the all-reduce records; print each row's efficiency."""
    fitted = fit([(r.algorithm, r.nranks, r.size_bytes, r.time_us / 1e6) for r in records])
    if fitted is None:
        say(comm, "# model: not enough modelled points to fit")
        return None
    say(comm, f"# model fit: {fitted.describe()}")
    say(comm, f"# {'size':>10} {'algorithm':>19} {'measured us':>12} {'model us':>10} {'efficiency':>10}")
    for r in records:
        predicted = fitted.predict(r.algorithm, r.nranks, r.size_bytes)
        if predicted is not None:
            say(comm, f"# {r.size_bytes:>10} {r.algorithm:>19} {r.time_us:>12.1f} {predicted * 1e6:>10.1f} "
                      f"{predicted * 1e6 / r.time_us:>9.2f}")
    return {"alpha_s": fitted.alpha, "beta_s_per_byte": fitted.beta, "gamma_s_per_byte": fitted.gamma}


def run_tune(args: argparse.Namespace, comm: Any, cases: dict[str, Case],
             make_options: Callable[[argparse.Namespace, list[str]], Options]) -> None:
    out = Path(args.out) if args.out else auto.user_table_path()
    table = json.loads(out.read_text()) if out.exists() else json.loads(auto.bundled_table_text())
    for collective in [c.strip() for c in args.collectives.split(",") if c.strip()]:
        if collective not in cases or collective == "sendrecv":
            raise SystemExit(f"cannot tune {collective!r}; choose from {sorted(set(cases) - {'sendrecv'})}")
        # the table ranks the algorithms themselves: with the check on, every one of them pays the same
        # agreement (and auto's small all-reduces ride in it, whatever the table says). shm is a
        # candidate: auto takes ring in its place for GPU arrays (auto.choose_for)
        opts = replace(make_options(args, list(algorithm_names(collective))), validate=False)
        say(comm, f"# tuning {collective} on {comm.size} ranks")
        records = run_case(cases[collective], comm, opts, lambda r: say(comm, format_row(r)))
        broken = sorted({r.algorithm for r in records if r.wrong})
        if broken:
            raise SystemExit(f"tune: {collective} algorithm(s) {broken} returned wrong results; not writing a table")
        rules = rules_from(records)
        table.setdefault(collective, {})[str(comm.size)] = rules
        say(comm, f"# {collective}, {comm.size} ranks: {rules}")
        if collective == "allreduce":
            table.setdefault("model", {})[str(comm.size)] = report_model(comm, records)
    table["source"] = "mpicoll-bench tune"
    auto.check_table(table, str(out))
    if comm.rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(auto.format_table(table))
    comm.mpi.Barrier()
    auto.reset()
    say(comm, f"# wrote {out}; algorithm='auto' reads it "
              f"{'by default' if not args.out else 'when MPICOLL_AUTO_TABLE points to it'}")
