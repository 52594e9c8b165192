"""``mpicoll-bench report``: turn one or more ``--json`` result files into a markdown table.

Rows are message sizes, columns the busbw (GB/s) of each algorithm, then the ratios asked for
with ``--ratio A/B`` (time of B over time of A, i.e. "A is this many times faster than B";
``best`` names the fastest algorithm of the row, ``sendrecv`` the point-to-point ceiling, whose
ratio is taken on busbw). With several files (separate runs), each cell is the median over runs
and the ratio columns show the median with the range over runs in brackets.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .harness import format_size


def load(paths: Sequence[str]) -> list[dict[tuple[int, str], dict[str, Any]]]:
    """One dict per file: (size_bytes, algorithm) -> record."""
    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            document = json.load(fh)
        runs.append({(r["size_bytes"], r["algorithm"]): r for r in document["results"]})
    return runs


def _speed(run: dict[tuple[int, str], dict[str, Any]], size: int, name: str, algorithms: list[str]) -> float | None:
    """busbw of ``name`` at ``size`` (``best``: the highest among ``algorithms``)."""
    if name == "best":
        values = [run[(size, a)]["busbw_GBps"] for a in algorithms if (size, a) in run]
        return max(values) if values else None
    record = run.get((size, name))
    return None if record is None else record["busbw_GBps"]


def table(runs: list[dict[tuple[int, str], dict[str, Any]]], ratios: Sequence[str]) -> str:
    """The markdown table (see the module docstring)."""
    sizes = sorted({size for run in runs for size, _ in run})
    algorithms = list(dict.fromkeys(a for run in runs for _, a in run if a != "sendrecv"))
    has_ceiling = any(a == "sendrecv" for run in runs for _, a in run)
    columns = [*algorithms, *(["sendrecv"] if has_ceiling else [])]
    header = ["size", *[f"{c} busbw" for c in columns], *ratios]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for size in sizes:
        cells = [format_size(size)]
        for c in columns:
            values = [r[(size, c)]["busbw_GBps"] for r in runs if (size, c) in r]
            cells.append(f"{statistics.median(values):.2f}" if values else "")
        for ratio in ratios:
            top, bottom = ratio.split("/")
            per_run = []
            for run in runs:
                a, b = _speed(run, size, top, algorithms), _speed(run, size, bottom, algorithms)
                if a and b:
                    per_run.append(a / b)
            if not per_run:
                cells.append("")
            elif len(per_run) == 1:
                cells.append(f"{per_run[0]:.2f}")
            else:
                cells.append(f"{statistics.median(per_run):.2f} [{min(per_run):.2f}-{max(per_run):.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="markdown table from --json result files (no MPI needed)")
    p.add_argument("files", nargs="+", help="JSON files written by --json (several runs are combined)")
    p.add_argument("--ratio", action="append", default=[],
                   help="a column A/B = busbw(A)/busbw(B); 'best' and 'sendrecv' allowed; repeatable")


def run_report(args: argparse.Namespace) -> int:
    print(table(load(args.files), args.ratio))
    by_meta: dict[str, list[str]] = defaultdict(list)
    for path in args.files:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)["meta"]
        by_meta[f"{meta['nranks']} ranks, {meta['nhosts']} host(s), {meta['mpi_library']}"].append(meta["date"])
    for what, dates in by_meta.items():
        print(f"\n{what}; runs: {', '.join(dates)}")
    return 0
