"""``mpicoll-bench timeline summarize|plot trace.json``: read a trace written by :mod:`mpicoll.timeline`.

- ``summarize``: per collective and per phase, count, total, mean and p50/p95/p99 durations;
  bytes and effective bandwidth of the collectives; the engine's queue waits and the buckets;
  and a straggler table: for every collective call (matched across ranks by communicator and
  call number), the rank that started it last and by how much it was late, aggregated per rank
  ("rank 3 was last in 61% of the all-reduces, median 4.2 ms late"). *Late by* is the last
  rank's start minus the second-to-last rank's start: the time every other rank waited for that
  rank alone.
- ``plot``: a Gantt picture of a window of the trace, one row per rank and thread, each
  collective, phase, queue wait and bucket a coloured bar.

Reads files only: no MPI.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def add_parser(sub: Any) -> None:
    """Register ``timeline summarize`` and ``timeline plot``."""
    p = sub.add_parser("timeline", help="summarize or plot a trace written with MPICOLL_TIMELINE")
    actions = p.add_subparsers(dest="action", required=True)
    s = actions.add_parser("summarize", help="tables: durations per collective and phase, stragglers")
    s.add_argument("trace", help="the merged trace JSON")
    s.add_argument("--json", metavar="PATH", help="also write the tables as JSON")
    g = actions.add_parser("plot", help="a Gantt picture of a window of the trace")
    g.add_argument("trace", help="the merged trace JSON")
    g.add_argument("-o", "--out", default="timeline.png", help="PNG to write (default timeline.png)")
    g.add_argument("--start-ms", type=float, default=None, help="window start (ms on rank 0's clock)")
    g.add_argument("--span-ms", type=float, default=None,
                   help="window length (default: the whole trace, or the last 3 steps when buckets were recorded)")
    o = actions.add_parser("overhead", help="(under mpiexec) the cost of recording: an all-reduce with the "
                                            "timeline off and on, side by side")
    o.add_argument("-s", "--size", default="1M", help="message size (default 1M)")
    o.add_argument("-n", "--iters", type=int, default=200, help="calls per measurement (default 200)")
    o.add_argument("--repeats", type=int, default=15, help="off/on pairs; medians are reported (default 15)")
    o.add_argument("--algo", default="auto", help="all-reduce algorithm (default auto)")


def load(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The complete (``ph == "X"``) events of a trace, and its ``otherData``."""
    document = json.loads(Path(path).read_text())
    events = document["traceEvents"] if isinstance(document, dict) else document
    meta = document.get("otherData", {}) if isinstance(document, dict) else {}
    return [e for e in events if e.get("ph") == "X"], meta


def _stats(durations_us: list[float]) -> dict[str, float]:
    d = np.asarray(durations_us, dtype=np.float64) / 1000.0  # ms
    p50, p95, p99 = np.percentile(d, [50, 95, 99])
    return {"count": int(d.size), "total_ms": float(d.sum()), "mean_ms": float(d.mean()), "p50_ms": float(p50),
            "p95_ms": float(p95), "p99_ms": float(p99), "max_ms": float(d.max())}


def stragglers(events: list[dict[str, Any]], nranks: int) -> dict[str, Any]:
    """Who started each collective call last, and how late (see the module docstring)."""
    calls: dict[tuple[int, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    for e in events:
        if e.get("cat") == "collective" and not e["args"].get("nested"):
            calls[(e["args"]["comm"], e["args"]["seq"])][e["pid"]] = e
    late: dict[int, list[float]] = defaultdict(list)
    per_name: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    complete = 0
    for by_rank in calls.values():
        if len(by_rank) < max(nranks, 2):
            continue  # a call not seen on every rank (a window's edge) says nothing about who was late
        complete += 1
        starts = sorted((e["ts"], rank) for rank, e in by_rank.items())
        (second, _), (last, rank) = starts[-2], starts[-1]
        late[rank].append((last - second) / 1000.0)
        per_name[next(iter(by_rank.values()))["name"]][rank] += 1
    rows = [{"rank": rank, "last_count": len(v), "last_pct": 100.0 * len(v) / complete,
             "median_late_ms": float(np.median(v)), "max_late_ms": float(np.max(v)), "total_late_ms": float(np.sum(v))}
            for rank, v in sorted(late.items(), key=lambda kv: -sum(kv[1]))]  # who cost the others most first
    return {"calls": complete, "ranks": rows,
            "by_collective": {name: dict(counts) for name, counts in per_name.items()}}


def summarize(events: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Every table ``summarize`` prints, as data."""
    nranks = int(meta.get("ranks") or len({e["pid"] for e in events}))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        cat = e.get("cat", "")
        if cat == "collective":
            key = ("collective", e["name"] + (" (nested)" if e["args"].get("nested") else ""))
        elif cat == "phase":
            key = ("phase", f"{e['args'].get('in', '?')} / {e['name']}")
        elif cat == "bucket":
            key = ("bucket", e["name"])
        else:
            key = (cat or "other", e["name"])
        groups[key].append(e)
    tables: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (cat, name), group in sorted(groups.items()):
        row = {"name": name, **_stats([e["dur"] for e in group])}
        if cat == "collective":
            nbytes = sum(e["args"].get("bytes", 0) for e in group)
            row["bytes"] = int(nbytes)
            row["GBps"] = nbytes / (row["total_ms"] * 1e6) if row["total_ms"] > 0 else 0.0
            algorithms = sorted({str(e["args"].get("algorithm", "")) for e in group})
            row["algorithms"] = ",".join(algorithms)
        tables[cat].append(row)
    return {"ranks": nranks, "events": len(events), "tables": dict(tables), "stragglers": stragglers(events, nranks)}


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown tables of :func:`summarize` (durations in ms, summed over every rank)."""
    lines = [f"# {summary['events']} events from {summary['ranks']} ranks (durations in ms, over all ranks)"]
    columns = ("count", "total_ms", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    for cat, rows in summary["tables"].items():
        extra = ("bytes", "GBps", "algorithms") if cat == "collective" else ()
        lines += ["", f"## {cat}", "", "| name | " + " | ".join(c.removesuffix("_ms") for c in columns + extra) + " |",
                  "|---" * (1 + len(columns) + len(extra)) + "|"]
        for row in sorted(rows, key=lambda r: -r["total_ms"]):
            cells = [str(row["count"])] + [f"{row[c]:.3f}" for c in columns[1:]]
            if extra:
                cells += [str(row["bytes"]), f"{row['GBps']:.4g}", row["algorithms"]]
            lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    s = summary["stragglers"]
    lines += ["", f"## stragglers ({s['calls']} collective calls seen on every rank)", "",
              "| rank | last in | % of calls | median late (ms) | max late (ms) | total late (ms) |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['rank']} | {r['last_count']} | {r['last_pct']:.0f}% | {r['median_late_ms']:.3f} | "
              f"{r['max_late_ms']:.3f} | {r['total_late_ms']:.3f} |" for r in s["ranks"]]
    if s["ranks"]:
        top = s["ranks"][0]
        lines += ["", f"rank {top['rank']} kept the others waiting longest: last in {top['last_pct']:.0f}% of the "
                      f"collectives, median {top['median_late_ms']:.2f} ms late, {top['total_late_ms']:.1f} ms "
                      f"in all"]
    return "\n".join(lines)


_COLORS = {"agreement": "#9e9e9e", "wire": "#1f77b4", "average": "#17becf", "copy out": "#bcbd22",
           "compress": "#d62728", "exchange": "#ff7f0e", "decode": "#9467bd", "reduce": "#8c564b",
           "queue": "#e377c2"}


def _window(events: list[dict[str, Any]], start_ms: float | None, span_ms: float | None) -> tuple[float, float]:
    first = min(e["ts"] for e in events) / 1000.0
    last = max(e["ts"] + e["dur"] for e in events) / 1000.0
    if start_ms is None and span_ms is None:
        steps = sorted({e["args"].get("step") for e in events if e.get("cat") == "bucket"} - {None})
        if len(steps) > 3:  # the last three steps of a training run
            start_ms = min(e["ts"] for e in events if e.get("cat") == "bucket" and e["args"]["step"] == steps[-3])
            return start_ms / 1000.0, last
    start = first if start_ms is None else start_ms
    return start, last if span_ms is None else start + span_ms


def plot(events: list[dict[str, Any]], out: str | Path, start_ms: float | None = None,
         span_ms: float | None = None) -> Path:
    """Draw the Gantt picture of ``events`` in a window (ms on rank 0's clock); returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    lo, hi = _window(events, start_ms, span_ms)
    shown = [e for e in events if e["ts"] / 1000.0 < hi and (e["ts"] + e["dur"]) / 1000.0 > lo]
    rows = sorted({(e["pid"], e["tid"]) for e in shown})
    threads = {key: f"rank {key[0]} / {'main' if i == 0 else 'thread ' + str(i)}"
               for pid in {p for p, _ in rows}
               for i, key in enumerate(sorted(k for k in rows if k[0] == pid))}
    fig, ax = plt.subplots(figsize=(12, 0.6 * len(rows) + 1.5))
    depth_height = {"collective": 0.8, "bucket": 0.8, "queue": 0.5, "phase": 0.5}
    for y, key in enumerate(rows):
        # longest first, so that the phases nested in a collective are drawn over it
        for e in sorted((e for e in shown if (e["pid"], e["tid"]) == key), key=lambda e: -e["dur"]):
            cat = e.get("cat", "")
            color = "#c7c7c7" if cat == "collective" else "#2ca02c" if cat == "bucket" else _COLORS.get(
                e["name"], "#7f7f7f")
            height = depth_height.get(cat, 0.5) * (0.6 if e["args"].get("nested") else 1.0)
            ax.broken_barh([(e["ts"] / 1000.0, max(e["dur"] / 1000.0, 1e-3))], (y - height / 2, height),
                           facecolors=color, edgecolors="none")
    ax.set_yticks(range(len(rows)), [threads[k] for k in rows])
    ax.set_xlim(lo, hi)
    ax.set_xlabel("time (ms, rank 0's clock)")
    ax.invert_yaxis()
    legend = [Patch(color="#c7c7c7", label="collective"), Patch(color="#2ca02c", label="bucket (launch to done)")]
    legend += [Patch(color=c, label=n) for n, c in _COLORS.items()]
    fig.legend(handles=legend, loc="lower center", ncol=6, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def run_overhead(args: argparse.Namespace, comm: Any) -> int:
    """Time ``--iters`` all-reduces with the timeline off, then on, ``--repeats`` times, alternating;
    print the medians and their ratio (rank 0). Runs with the settings a user gets by default."""
    import shutil
    import tempfile
    import time

    from mpi4py import MPI

    import mpicoll
    from mpicoll import timeline

    from .harness import parse_size, say

    x = np.ones(parse_size(args.size) // 4, dtype=np.float32)
    out = np.empty_like(x)
    user = comm.mpi.bcast(tempfile.mkdtemp(prefix="mpicoll-timeline-") if comm.rank == 0 else None)

    def measure() -> float:
        comm.mpi.Barrier()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            mpicoll.allreduce(x, algorithm=args.algo, comm=comm, out=out)
        return comm.mpi.allreduce(time.perf_counter() - t0, op=MPI.MAX) / args.iters

    def measure_on(i: int) -> float:
        timeline.start(f"{user}/trace-{i}.json", comm=comm)
        try:
            return measure()
        finally:
            timeline.stop()

    measure()  # warm-up: connections, scratch buffers
    off, on = [], []
    for i in range(args.repeats):  # ABBA: neither side always runs first (after start's or stop's own work)
        if i % 2 == 0:
            off.append(measure())
            on.append(measure_on(i))
        else:
            on.append(measure_on(i))
            off.append(measure())
    if comm.rank == 0:  # the traces were only a by-product of recording
        shutil.rmtree(user, ignore_errors=True)
    o, n = float(np.median(off)), float(np.median(on))
    paired = np.asarray(on) / np.asarray(off)  # each round's on/off: robust to the machine's drift
    lo, hi = np.percentile(paired, [25, 75])
    say(comm, f"# timeline overhead, {comm.size} ranks, {args.size} all-reduce ({args.algo}), {args.iters} calls x "
              f"{args.repeats} rounds (off and on alternating, order swapped every round)")
    say(comm, f"off {o * 1e6:.1f} us   on {n * 1e6:.1f} us   on/off {n / o:.3f}   "
              f"per-round on/off median {float(np.median(paired)):.3f} (IQR {lo:.3f}-{hi:.3f})   "
              f"cost per call {(n - o) * 1e6:.1f} us")
    return 0


def run_timeline(args: argparse.Namespace) -> int:
    """Entry point of ``mpicoll-bench timeline``."""
    events, meta = load(args.trace)
    if not events:
        print(f"{args.trace}: no events")
        return 1
    if args.action == "summarize":
        summary = summarize(events, meta)
        print(format_summary(summary))
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=1))
        return 0
    print(f"wrote {plot(events, args.out, args.start_ms, args.span_ms)}")
    return 0
