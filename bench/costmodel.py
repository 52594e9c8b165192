"""``mpicoll-bench probe | predict | model-check``: fit the cost model, project it, check it.

- ``probe`` (under the job's launcher, seconds): measures this job's machine (links per class,
  reduction and matrix speed, codec ratios and rates, native's curve) and writes it as JSON, the
  file ``compressor="auto"`` reads through ``MPICOLL_MODEL``;
- ``predict`` (no MPI): predicted all-reduce times per rank count, link rate, size and codec, the
  break-even size of each codec, and a plot; for the rank counts and networks this machine cannot
  host;
- ``model-check`` (under the launcher, e.g. on the network bed): every path measured and
  predicted side by side on this job's layout, with the prediction's error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from .harness import format_size, parse_size, say

PREDICT_CODECS = "none,fp16,topk,sign,powersgd"
CHECK_PATHS = ("ring,recursive_doubling,rabenseifner,tree,hierarchical,native,fp16:ring,topk:sparse_allgather,"
               "topk:sparse_rd,sign:allgather_decode,sign:two_phase,int8:two_phase,powersgd:powersgd,sign:hierarchical")


def _human(nbytes: float) -> str:
    """``format_size`` for whole multiples, else one decimal (1.3G)."""
    exact = format_size(int(nbytes))
    if not exact.isdigit():
        return exact
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f}{unit}"
    return exact


def add_parser(sub: Any) -> None:
    """Register the three commands."""
    p = sub.add_parser("probe", help="(under mpiexec) fit the cost model to this job's machine, in seconds")
    p.add_argument("--json", metavar="PATH", default="mpicoll-model.json",
                   help="where to write the model (default mpicoll-model.json; MPICOLL_MODEL=PATH lets "
                        "compressor='auto' use it)")
    p.add_argument("--repeats", type=int, default=5, help="samples per measurement (default 5)")
    p = sub.add_parser("predict", help="project the cost model to other rank counts, networks and sizes (no MPI)")
    p.add_argument("--model", required=True, help="a probe's JSON (mpicoll-bench probe --json)")
    p.add_argument("--intra-model", default=None,
                   help="a probe's JSON whose link inside a host to use (e.g. one probed with 2 ranks on one host, "
                        "when --model was probed with one rank per host)")
    p.add_argument("--codec-rates", metavar="JSON", default=None,
                   help="price the codecs, the reduction and PowerSGD's products with a GPU's kernels: the JSON "
                        "of python -m mpicoll.bench.gpu_check (its codec_rates); links stay --model's")
    p.add_argument("--intra-rate", default=None,
                   help="the link inside a host at this rate instead of the probed one, e.g. 3600gbit for "
                        "NVLink's 450 GB/s per direction (latency stays the probed one)")
    p.add_argument("--ranks", default="8,64,256,1024", help="rank counts (default 8,64,256,1024)")
    p.add_argument("--ranks-per-host", type=int, default=8, help="ranks per host (default 8)")
    p.add_argument("--rate", default="1gbit,10gbit,25gbit,100gbit",
                   help="inter-host link rates (default 1gbit,10gbit,25gbit,100gbit)")
    p.add_argument("--latency-us", type=float, default=None,
                   help="inter-host latency per message round (default: the probed one)")
    p.add_argument("--size", default="97M,1.3G", help="all-reduce sizes, e.g. a model's gradient (default 97M,1.3G)")
    p.add_argument("--compressors", default=PREDICT_CODECS, help=f"codecs (default {PREDICT_CODECS})")
    p.add_argument("--json", metavar="PATH", help="write every prediction and the break-even table as JSON")
    p.add_argument("--plot", metavar="PNG", help="plot the speedup of each codec over uncompressed")
    p = sub.add_parser("model-check", help="(under mpiexec) every path measured against the model's prediction")
    p.add_argument("--model", default=None, help="a probe's JSON (default: probe now)")
    p.add_argument("--sizes", default="1M,4M,16M", help="array sizes (default 1M,4M,16M)")
    p.add_argument("--paths", default=CHECK_PATHS,
                   help="dense algorithms and codec:path pairs (default: all of them)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per path and size, median kept (default 3)")
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    p = sub.add_parser("model-report", help="the validation table of several model-check JSON files (no MPI)")
    p.add_argument("files", nargs="+", help="model-check --json outputs")
    p.add_argument("--min-ms", type=float, default=50.0,
                   help="rows measured above this many ms count toward the target (default 50)")
    p.add_argument("--target", type=float, default=0.25, help="largest |error| that meets the target (default 0.25)")
    p.add_argument("--repredict", action="store_true",
                   help="predict again with the current formulas from the model each file recorded (its own probe)")
    p.add_argument("--median", action="store_true",
                   help="files of one configuration (the same file name) from several launches make one row per "
                        "path and size: the median prediction against the median measurement, each launch's "
                        "error beside it")


# ----------------------------------------------------------------------------------------------- probe

def run_probe(args: argparse.Namespace, comm: Any) -> int:
    """``mpicoll-bench probe``."""
    from mpicoll.model.probe import probe

    t0 = time.perf_counter()
    machine = probe(comm, repeats=args.repeats)
    if comm.rank == 0:
        Path(args.json).write_text(json.dumps(machine.to_json(), indent=1) + "\n")
    say(comm, describe(machine) + f"\n# probed in {time.perf_counter() - t0:.1f} s; wrote {args.json}")
    return 0


def describe(machine: Any) -> str:
    """A readable summary of a model."""
    where = {k: v for k, v in machine.probed_on.items() if k != "pings"}
    lines = [f"# machine model: {where}"]
    for name, link in machine.links.items():
        lines.append(f"link {name:5s}  alpha {link.alpha * 1e6:8.1f} us   {link.gbit:8.3f} Gbit/s"
                     + (f"   burst {link.burst / 1024:.0f} KiB" if link.burst >= 1024 else ""))
    lines.append(f"reduce {1 / machine.gamma / 1e9:.2f} GB/s   products {machine.flops / 1e9:.2f} GFLOP/s")
    for name, c in machine.codecs.items():
        if c.kind == "lowrank":
            lines.append(f"codec {name:9s} {c.kind:9s} rank {c.rank} (cost: products and two small all-reduces)")
        else:
            lines.append(f"codec {name:9s} {c.kind:9s} wire {c.ratio:7.4f}  compress {c.compress_Bps / 1e9:6.2f} GB/s"
                         f"  decode {c.decode_Bps / 1e9:6.2f} GB/s")
    for p, points in machine.native.items():
        lines.append(f"native on {p} ranks: " + ", ".join(f"{format_size(int(b))} {t * 1e6:.0f} us" for b, t in points))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- predict

def run_predict(args: argparse.Namespace) -> int:
    """``mpicoll-bench predict``."""
    from mpicoll.errors import ArgumentError
    from mpicoll.model import Layout, Machine, break_even, compressed_seconds
    from mpicoll.model.machine import Link
    from mpicoll.model.predict import gbit

    machine = Machine.load(args.model)
    if args.intra_model:
        inside = Machine.load(args.intra_model).links.get("intra")
        if inside is None:
            raise SystemExit(f"{args.intra_model} has no link inside a host: probe it with 2 ranks on one host")
        machine.links["intra"] = inside
    try:
        rate_gbit = {r.strip(): gbit(r) for r in [*args.rate.split(","), *([args.intra_rate] * bool(args.intra_rate))]}
    except ValueError as error:
        raise SystemExit(f"predict: {error}") from None
    if args.intra_rate:
        inside = machine.links.get("intra") or machine.link("inter")
        machine.links["intra"] = Link(inside.alpha, 8e-9 / rate_gbit[args.intra_rate.strip()])
    if args.codec_rates:
        try:
            report = json.loads(Path(args.codec_rates).read_text())
            measured = report.get("codec_rates", report)
            failed = {k: v["error"] for k, v in measured.get("codecs", {}).items() if "error" in v}
            machine = machine.with_codec_rates(measured, f"{report.get('device', '?')} ({args.codec_rates})")
        except (OSError, ValueError, AttributeError, TypeError, ArgumentError) as error:
            raise SystemExit(f"predict: --codec-rates {args.codec_rates}: {error} (give the JSON that "
                             f"python -m mpicoll.bench.gpu_check --json writes)") from None
        if failed:
            print(f"# {args.codec_rates}: no rates for {failed}; those keep {args.model}'s")
    ranks = [int(r) for r in args.ranks.split(",")]
    if args.ranks_per_host > 1 and "intra" not in machine.links:
        raise SystemExit(f"{args.model} was probed with one rank per host, so it has no link inside a host; give "
                         f"--intra-model (a probe with 2 ranks on one host) or --ranks-per-host 1")
    rates = [r.strip() for r in args.rate.split(",")]
    sizes = [parse_size(s) for s in args.size.split(",")]
    codecs = [c.strip() for c in args.compressors.split(",")]
    missing = [c for c in codecs if c != "none" and c not in machine.codecs]
    if missing:
        raise SystemExit(f"the model has no rates for {missing}; probed: {sorted(machine.codecs)}")
    alpha = None if args.latency_us is None else args.latency_us * 1e-6
    rows, even = [], []
    print(describe(machine))
    print(f"# predicted all-reduce time (ms), {args.ranks_per_host} ranks per host; in brackets the path auto takes")
    print(f"{'ranks':>6} {'rate':>8} {'size':>8} " + " ".join(f"{c:>22}" for c in codecs))
    sweep = [float(1 << e) for e in range(12, 34)]  # 4 KiB .. 8 GiB
    for rate in rates:
        m = machine.with_rate(rate_gbit[rate], alpha)
        for p in ranks:
            per_host = min(args.ranks_per_host, p)
            layout = Layout(max(1, p // per_host), per_host)
            for n in sizes:
                cells = []
                for codec in codecs:
                    path, seconds = compressed_seconds(m, codec, n, layout)
                    rows.append({"ranks": p, "ranks_per_host": per_host, "rate": rate, "bytes": n, "codec": codec,
                                 "path": path, "seconds": seconds})
                    cells.append(f"{seconds * 1e3:12.2f} [{path[:8]:>8}]")
                print(f"{p:>6} {rate:>8} {_human(n):>8} " + " ".join(cells))
            for codec in codecs:
                if codec != "none":
                    at = break_even(m, codec, layout, sweep)
                    even.append({"ranks": p, "rate": rate, "codec": codec, "break_even_bytes": at})
    print("# break-even: the size from which each codec is predicted faster than uncompressed (- never)")
    for rate in rates:
        for p in ranks:
            found = {e["codec"]: e["break_even_bytes"] for e in even if e["rate"] == rate and e["ranks"] == p}
            cells = [f"{c} {_human(b) if b else '-'}" for c, b in found.items()]
            print(f"{p:>6} {rate:>8} " + "  ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": machine.to_json(), "predictions": rows, "break_even": even},
                                              indent=1) + "\n")
        print(f"# wrote {args.json}")
    if args.plot:
        print(f"# wrote {plot_speedups(rows, args.plot)}")
    return 0


def plot_speedups(rows: list[dict[str, Any]], out: str) -> str:
    """One panel per link rate: predicted speedup of each codec over uncompressed against rank count,
    one line per codec and size."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("predict --plot needs matplotlib: pip install 'mpicoll[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = list(dict.fromkeys(r["rate"] for r in rows))
    sizes = list(dict.fromkeys(r["bytes"] for r in rows))
    codecs = [c for c in dict.fromkeys(r["codec"] for r in rows) if c != "none"]
    fig, axes = plt.subplots(1, len(rates), figsize=(4.2 * len(rates), 3.8), sharey=True, squeeze=False)
    base = {(r["rate"], r["ranks"], r["bytes"]): r["seconds"] for r in rows if r["codec"] == "none"}
    styles = ["-", "--", ":", "-."]
    for ax, rate in zip(axes[0], rates, strict=True):
        for ci, codec in enumerate(codecs):
            for si, n in enumerate(sizes):
                pts = sorted((r["ranks"], base[(rate, r["ranks"], n)] / r["seconds"]) for r in rows
                             if r["rate"] == rate and r["codec"] == codec and r["bytes"] == n)
                ax.plot([p for p, _ in pts], [s for _, s in pts], styles[si % 4], color=f"C{ci}", marker="o",
                        markersize=3, label=f"{codec} {_human(n)}")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{rate} between hosts")
        ax.set_xlabel("ranks")
    axes[0][0].set_ylabel("predicted speedup over uncompressed")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------------------- model-check

def run_model_check(args: argparse.Namespace, comm: Any) -> int:
    """``mpicoll-bench model-check``: measure each path at each size and print it beside the model."""
    import mpicoll
    from mpicoll import compression
    from mpicoll.model import Layout, Machine
    from mpicoll.model.probe import probe

    machine = Machine.load(args.model) if args.model else probe(comm)
    layout = Layout.of(comm.hosts)
    hosts = layout.hosts
    say(comm, describe(machine))
    say(comm, f"# model-check: {comm.size} ranks on {hosts} host(s); median of {args.repeats} calls after a warm-up")
    say(comm, f"{'path':>28} {'size':>8} {'predicted ms':>13} {'measured ms':>12} {'error':>8}")
    rows = []
    params = {"topk": {"ratio": 0.01}, "powersgd": {"rank": 4}}
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        x = np.random.default_rng(comm.rank).standard_normal(size // 4).astype(np.float32)
        for entry in [e.strip() for e in args.paths.split(",") if e.strip()]:
            codec, _, path = entry.rpartition(":")
            if path == "hierarchical" and not (layout.hosts > 1 and layout.per_host > 1):
                continue
            if codec:
                if codec not in machine.codecs:
                    continue
                compressor = compression.get(codec, **params.get(codec, {}))

                def call(compressor: Any = compressor, path: str = path, x: np.ndarray = x) -> Any:
                    return mpicoll.compressed_allreduce(x, compressor, key="check", comm=comm, algorithm=path)
            else:
                out = np.empty_like(x)

                def call(path: str = path, out: np.ndarray = out, x: np.ndarray = x) -> Any:
                    return mpicoll.allreduce(x, algorithm=path, comm=comm, out=out)

            predicted = predict_entry(machine, entry, size, layout)
            measured = _median_call(comm, call, args.repeats)
            error = None if predicted is None else (predicted - measured) / measured
            rows.append({"path": entry, "bytes": size, "predicted_s": predicted, "measured_s": measured,
                         "error": error, "ranks": comm.size, "hosts": hosts})
            shown = "-" if predicted is None else f"{predicted * 1e3:13.2f}"
            say(comm, f"{entry:>28} {format_size(size):>8} {shown:>13} {measured * 1e3:12.2f} "
                      f"{'' if error is None else f'{error:+8.0%}'}")
    if args.json and comm.rank == 0:
        Path(args.json).write_text(json.dumps({"model": machine.to_json(), "rows": rows}, indent=1) + "\n")
    say(comm, f"# wrote {args.json}" if args.json else "")
    return 0


def predict_entry(machine: Any, entry: str, size: float, layout: Any) -> float | None:
    """The model's seconds for one model-check entry: a dense algorithm, or ``codec:path``."""
    from mpicoll.model.predict import allreduce_seconds, compressed_seconds

    codec, _, path = entry.rpartition(":")
    if codec:
        return compressed_seconds(machine, codec, size, layout, path)[1]
    return allreduce_seconds(machine, path, size, layout)


def _median_call(comm: Any, call: Any, repeats: int) -> float:
    from mpi4py import MPI

    call()  # warm-up: connections, compilation, scratch buffers
    comm.mpi.Barrier()
    t0 = time.perf_counter()
    call()  # a second one, timed without the first's one-time costs
    second = comm.mpi.allreduce(time.perf_counter() - t0, op=MPI.MAX)  # the same on every rank
    for _ in range(min(5, int(0.3 / max(second, 1e-6)))):  # fast calls settle for ~0.3 s more (cf. the probe)
        call()
    samples = []
    for _ in range(repeats):
        comm.mpi.Barrier()
        t0 = time.perf_counter()
        call()
        samples.append(comm.mpi.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    return statistics.median(samples)


# ---------------------------------------------------------------------------------------- model-report

def run_model_report(args: argparse.Namespace) -> int:
    """``mpicoll-bench model-report``: one markdown table of predicted against measured, per file
    (a bed configuration), and how many rows above ``--min-ms`` meet ``--target``; with
    ``--median``, one row per configuration, path and size over several launches."""
    counted = met = 0
    per_path: dict[str, list[float]] = {}
    launches = "| launches' errors " if args.median else ""
    print(f"| configuration | path | size | predicted ms | measured ms | error {launches}|")
    print("|---|---|---|---|---|---|" + ("---|" if args.median else ""))
    for where, path, nbytes, predictions, measurements in _report_rows(args):
        predicted = statistics.median(predictions) if None not in predictions else None
        measured = statistics.median(measurements)
        error = None if predicted is None else (predicted - measured) / measured
        counts = predicted is not None and measured * 1e3 >= args.min_ms
        if counts:
            counted += 1
            met += abs(error) <= args.target
            per_path.setdefault(path, []).append(error)
        flag = "" if not counts or abs(error) <= args.target else " **"
        shown = "-" if predicted is None else f"{predicted * 1e3:.1f}"
        err = "-" if error is None else f"{error:+.0%}{flag}"
        each = ""
        if args.median:
            each = " " + ", ".join("-" if p is None else f"{(p - m) / m:+.0%}"
                                   for p, m in zip(predictions, measurements, strict=True)) + " |"
        print(f"| {where} | {path} | {_human(nbytes)} | {shown} | {measured * 1e3:.1f} | {err} |{each}")
    print(f"\n{met} of {counted} predictions of calls above {args.min_ms:g} ms within {args.target:.0%} "
          f"(** marks the others)\n")
    print("| path | within target / counted | errors (above the time floor) |")
    print("|---|---|---|")
    for path, errors in per_path.items():
        inside = sum(abs(e) <= args.target for e in errors)
        print(f"| {path} | {inside} / {len(errors)} | {min(errors):+.0%} .. {max(errors):+.0%} |")
    return 0


def _report_rows(args: argparse.Namespace) -> list[tuple[str, str, int, list[float | None], list[float]]]:
    """``(configuration, path, bytes, predictions, measurements)`` per row of the files, in their
    order: one launch each, or with ``--median`` every launch of a configuration (files of the same
    name) together. ``--repredict`` prices each row again from its own file's probe."""
    from mpicoll.model import Layout, Machine

    # keyed by configuration, launch (None: every launch together), path and size
    rows: dict[tuple[str, int | None, str, int], tuple[list[float | None], list[float]]] = {}
    for i, name in enumerate(args.files):
        document = json.loads(Path(name).read_text())
        where, launch = Path(name).stem, None if args.median else i
        machine = Machine.from_json(document["model"])
        for row in document["rows"]:
            predicted = row["predicted_s"]
            codec = row["path"].rpartition(":")[0]
            unmeasured = codec in machine.codecs and machine.codecs[codec].compress_Bps >= 1e29
            if args.repredict and not unmeasured:  # a probe that never timed a codec keeps its own prediction
                layout = Layout(row["hosts"], row["ranks"] // row["hosts"])
                predicted = predict_entry(machine, row["path"], row["bytes"], layout)
            predictions, measurements = rows.setdefault((where, launch, row["path"], row["bytes"]), ([], []))
            predictions.append(predicted)
            measurements.append(row["measured_s"])
    return [(where, path, nbytes, *found) for (where, _, path, nbytes), found in rows.items()]
