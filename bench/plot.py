"""``mpicoll-bench plot``: busbw (or time) against message size, one line per algorithm, as PNG.

Reads the JSON written by ``--json`` (several files compare runs: each line is labelled with
its file when there is more than one). Needs matplotlib (``pip install 'mpicoll[bench]'``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .harness import format_size

METRICS = {"busbw": ("busbw_GBps", "bus bandwidth (GB/s)"), "algbw": ("algbw_GBps", "algorithm bandwidth (GB/s)"),
           "time": ("time_us", "time per call (us)")}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("plot", help="PNG of busbw (or time) against size from --json files (matplotlib)")
    p.add_argument("files", nargs="+", help="JSON files written by --json")
    p.add_argument("--out", default="mpicoll-bench.png", help="PNG path (default mpicoll-bench.png)")
    p.add_argument("--metric", choices=list(METRICS), default="busbw")
    p.add_argument("--collective", default=None, help="only this collective (default: every one in the files)")
    p.add_argument("--title", default=None)


def run_plot(args: argparse.Namespace) -> int:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plot needs matplotlib: pip install 'mpicoll[bench]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    field, label = METRICS[args.metric]
    fig, ax = plt.subplots(figsize=(8, 5))
    lines = 0
    for path in args.files:
        document = json.loads(Path(path).read_text())
        tag = f" ({Path(path).stem})" if len(args.files) > 1 else ""
        rows = [r for r in document["results"] if args.collective in (None, r["collective"])]
        for key in dict.fromkeys((r["collective"], r["algorithm"]) for r in rows):
            points = sorted((r["size_bytes"], r[field]) for r in rows if (r["collective"], r["algorithm"]) == key)
            if key[0] == "sendrecv":
                name = "sendrecv (point-to-point ceiling)"
            else:
                name = key[1] if args.collective or key[0] == "allreduce" else f"{key[0]}/{key[1]}"
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name + tag)
            lines += 1
    if not lines:
        raise SystemExit("nothing to plot: no matching results in the files")
    ax.set_xscale("log", base=2)
    if args.metric == "time":
        ax.set_yscale("log")
    ticks = sorted({r["size_bytes"] for path in args.files for r in json.loads(Path(path).read_text())["results"]})
    ax.set_xticks(ticks, [format_size(t) for t in ticks], rotation=45)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel(label)
    ax.set_title(args.title or f"mpicoll-bench: {label}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"# wrote {args.out}")
    return 0
