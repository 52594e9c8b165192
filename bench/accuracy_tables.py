"""Tables for bench/RESULTS.md from the JSON lines of examples/digits_lr_grid.py and examples/train_charlm.py.

``python -m mpicoll.bench.accuracy_tables digits FILE.jsonl``: final test accuracy, mean and
range over seeds, per learning rate and method (``--baseline adam``: and the paired difference
from Adam; the Adam methods' rows name a warm-up other than one epoch); ``charlm FILE.jsonl``:
validation loss and traffic against uncompressed Adam; ``tta FILE.jsonl``: time to accuracy,
i.e. the training seconds (no evaluation) until a run first reaches the uncompressed run's final
accuracy (digits) or validation loss (charlm), and the speed-up over uncompressed.
Reading only: it runs and times nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

DIVERGED_BELOW = 0.5  # a final accuracy under 50% on ten classes counts as diverged


def load(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def digits_label(r: dict) -> str:
    """The method's name, with the Adam methods' warm-up when it is not the default one epoch."""
    epochs = r.get("freeze_epochs")
    return r["method"] if epochs in (None, 1, 1.0) else f"{r['method']} (freeze {epochs:g} epochs)"


def digits(rows: list[dict], baseline: str | None = None) -> str:
    """``baseline``: also give each cell's difference from that method at the same lr, in points,
    averaged over the seeds both have (a paired difference)."""
    by = defaultdict(dict)
    for r in rows:
        by[(digits_label(r), r["lr"])][r["seed"]] = 100 * r["final_accuracy"]
    lrs = sorted({r["lr"] for r in rows})
    methods = list(dict.fromkeys(digits_label(r) for r in rows))
    out = ["| method | " + " | ".join(f"lr {lr}" for lr in lrs) + " |", "|---" * (len(lrs) + 1) + "|"]
    for m in methods:
        cells = []
        for lr in lrs:
            seeds = by.get((m, lr), {})
            acc = list(seeds.values())
            if not acc:
                cells.append("")
                continue
            flag = " **diverged**" if min(acc) < 100 * DIVERGED_BELOW else ""
            base = by.get((baseline, lr), {}) if baseline and m != baseline else {}
            both = [s for s in seeds if s in base]
            diff = f" [{statistics.mean(seeds[s] - base[s] for s in both):+.2f}]" if both else ""
            cells.append(f"{statistics.mean(acc):.2f} ({min(acc):.2f}-{max(acc):.2f}, n={len(acc)}){diff}{flag}")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def label(r: dict) -> str:
    """The method's name, with OneBitAdam's warm-up and sign block."""
    if r["method"] not in ("onebit", "onebitbf16"):
        return r["method"]
    return f"{r['method']} (freeze {r['freeze_step']}" + (f", sign block {r['sign_block']})" if r.get("sign_block")
                                                   else ", one scale per chunk)")


def charlm(rows: list[dict]) -> str:
    base = next(r for r in rows if r["method"] == "adam")
    out = ["| method | steps | validation loss (nats/char) | vs Adam | MiB sent per rank | traffic vs Adam |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        name = label(r)
        change = 100 * (r["validation_loss"] / base["validation_loss"] - 1)
        less = base["traffic_bytes"] / max(r["traffic_bytes"], 1)
        out.append(f"| {name} | {r['steps']} | {r['validation_loss']:.4f} | {change:+.2f}% | "
                   f"{r['traffic_bytes'] / 2**20:.1f} | {less:.1f}x less |")
    return "\n".join(out)


def time_to_target(rows: list[dict], slack: float = 0.0) -> str:
    """``slack``: the target is the uncompressed final accuracy minus ``slack`` (a fraction: 0.005
    is half a point), or its final loss times ``1 + slack``."""
    if "accuracy_per_epoch" in rows[0]:
        base = next(r for r in rows if r["method"] in ("none", "adam"))  # the SGD or the Adam grid
        target, better = base["final_accuracy"] - slack, (lambda v, t: v >= t)
        series = {r["method"]: list(zip(r["train_seconds_per_epoch"], r["accuracy_per_epoch"], strict=True))
                  for r in rows}
        unit = f"test accuracy {100 * target:.2f}%"
    else:
        base = next(r for r in rows if r["method"] == "adam")
        target, better = base["validation_loss"] * (1 + slack), (lambda v, t: v <= t)
        series = {label(r): [(s, v) for _, v, s in r["curve"]] for r in rows}
        unit = f"validation loss {target:.4f}"
    times = {m: next((s for s, v in pts if better(v, target)), None) for m, pts in series.items()}
    ref = times[base["method"]]
    out = [f"target: {unit} (the uncompressed run's final, slack {slack})", "",
           "| method | seconds to target | speed-up |", "|---|---|---|"]
    for m, t in times.items():
        out.append(f"| {m} | {'not reached' if t is None else f'{t:.1f}'} | "
                   f"{'' if t is None or not ref else f'{ref / t:.2f}x'} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("digits", "charlm", "tta"))
    parser.add_argument("path")
    parser.add_argument("--baseline", help="digits: also show each cell's paired difference from this method")
    parser.add_argument("--slack", type=float, default=0.0, help="tta: accept this much less than uncompressed's "
                        "final (accuracy: a fraction, 0.005 = half a point; loss: relative, 0.02 = 2%%)")
    args = parser.parse_args()
    rows = load(args.path)
    if args.kind == "tta":
        print(time_to_target(rows, args.slack))
    elif args.kind == "digits":
        print(digits(rows, args.baseline))
    else:
        print(charlm(rows))


if __name__ == "__main__":
    main()
