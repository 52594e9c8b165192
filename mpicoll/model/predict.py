"""Predicted times of whole calls: a plain all-reduce, a compressed one by the path ``auto``
takes, and a training step's buckets; the pure decision of which codec to use.

The path ``auto`` takes for a codec is :func:`auto_path`; it mirrors
:func:`mpicoll.aggregation.choice.choose_path` and the hierarchical rule (a test keeps the two equal).
The thresholds and rules for sparse and quantized payloads are not mirrored but shared: both
import them from :mod:`.rules`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import costs
from .costs import Cost, Layout
from .machine import Machine
from .rules import prefer_single_pass, sparse_path

OWN = ("ring", "recursive_doubling", "rabenseifner", "tree")


def allreduce_seconds(machine: Machine, algorithm: str, n: float, layout: Layout) -> float | None:
    """One uncompressed all-reduce of ``n`` bytes (``native``: the probed curve, or ``None``)."""
    if algorithm == "native":
        return machine.native_seconds(layout.p, n)
    return machine.seconds(costs.dense(algorithm, n, layout), n=n)


def best_uncompressed(machine: Machine, n: float, layout: Layout, *, native: bool = True) -> tuple[str, float]:
    """The fastest uncompressed all-reduce the model knows for ``n`` bytes: ``hierarchical`` when
    several hosts hold several ranks (what ``auto`` takes there), else the best of mpicoll's own
    algorithms and, where probed, ``native``."""
    if layout.hosts > 1 and layout.per_host > 1:
        return "hierarchical", machine.seconds(costs.hierarchical(n, layout), n=n)
    options = [(a, machine.seconds(costs.dense(a, n, layout), n=n)) for a in OWN]
    if native:
        t = machine.native_seconds(layout.p, n)
        if t is not None:
            options.append(("native", t))
    return min(options, key=lambda item: item[1])


def auto_path(kind: str, payload_bytes: float, p: int) -> str:
    """The flat compressed path ``auto`` takes for a codec of ``kind`` (see the module docstring)."""
    if kind == "sparse":
        return sparse_path(p)
    if kind == "quantized":
        return "allgather_decode" if prefer_single_pass(payload_bytes, p) else "two_phase"
    if kind == "lowrank":
        return "powersgd"
    return "summable"


def _flat(machine: Machine, codec: str, n: float, layout: Layout, path: str) -> Cost:
    rates = machine.codec(codec)
    if path == "powersgd":
        if layout.hosts > 1 and layout.per_host > 1:  # the path sums P and Q hierarchically across hosts
            return costs.powersgd(n, rates.rank or 4, layout, "hierarchical")
        return costs.powersgd(n, rates.rank or 4, layout, lambda nbytes: _dense_choice(machine, nbytes, layout))
    if path == "summable":
        return costs.summable(n, rates.ratio, layout, _dense_choice(machine, rates.ratio * n, layout), rates.widen)
    if path in OWN:  # a summable codec on a named dense algorithm
        return costs.summable(n, rates.ratio, layout, path, rates.widen)
    return costs.PATHS[path](n, rates.ratio, layout)


def _dense_choice(machine: Machine, n: float, layout: Layout) -> str:
    return min(OWN, key=lambda a: machine.seconds(costs.dense(a, n, layout), n=n))


def compressed_seconds(machine: Machine, codec: str, n: float, layout: Layout, path: str = "auto") -> tuple[str, float]:
    """One compressed all-reduce of ``n`` bytes with ``codec`` by ``path`` (``auto``: the path
    mpicoll's ``auto`` takes). ``none`` is the uncompressed all-reduce. Returns ``(path, seconds)``.

    Across several hosts with several ranks on some (``hierarchical``): exact reduce-scatter and
    allgather inside each host, the codec's flat path across hosts on ``n / q`` bytes per owner,
    the ``q`` owners of a host sharing its link (PowerSGD stays flat, its sums hierarchical)."""
    if codec == "none":
        return best_uncompressed(machine, n, layout)
    rates = machine.codec(codec)
    if path == "auto":
        if layout.hosts > 1 and layout.per_host > 1 and rates.kind != "lowrank":
            path = "hierarchical"
        else:
            path = auto_path(rates.kind, rates.ratio * n, layout.p)
    if path == "hierarchical":
        q, hosts = layout.per_host, layout.hosts
        inner_path = auto_path(rates.kind, rates.ratio * n / q, hosts)
        inner = _flat(machine, codec, n / q, Layout(hosts, 1), inner_path)
        inner.bytes = {c: v * q for c, v in inner.bytes.items()}
        local = costs.hierarchical(n, Layout(1, q)) if q > 1 else Cost()
        return path, machine.seconds(local, n=n) + machine.seconds(inner, codec, n=n / q)
    return path, machine.seconds(_flat(machine, codec, n, layout, path), codec, n=n)


@dataclass(frozen=True)
class Choice:
    """A codec decision: the chosen codec and every candidate's predicted seconds."""

    codec: str
    predicted: dict[str, float]

    def describe(self) -> str:
        """One line: the choice and the predictions it came from (milliseconds)."""
        table = ", ".join(f"{name} {seconds * 1e3:.2f} ms" for name, seconds in sorted(self.predicted.items(),
                                                                                         key=lambda kv: kv[1]))
        return f"{self.codec} (predicted: {table})"


def choose_codec(machine: Machine, n: float, layout: Layout, allowed: Iterable[str], *,
                 margin: float = 0.0) -> Choice:
    """The codec among ``allowed`` (``none`` always a candidate) with the lowest predicted time for
    one ``n``-byte bucket; ``none`` unless a codec beats it by more than ``margin`` (a fraction:
    compression changes the training, so it must pay clearly). Ties go to the first allowed."""
    predicted = {"none": best_uncompressed(machine, n, layout)[1]}
    for name in allowed:
        if name != "none" and name in machine.codecs:
            predicted[name] = compressed_seconds(machine, name, n, layout)[1]
    best = min(predicted, key=lambda k: (predicted[k], k != "none"))
    if best != "none" and predicted[best] * (1 + margin) >= predicted["none"]:
        best = "none"
    return Choice(best, predicted)


def break_even(machine: Machine, codec: str, layout: Layout, sizes: Sequence[float]) -> float | None:
    """The smallest of ``sizes`` (bytes, ascending) from which ``codec`` is predicted faster than
    the uncompressed all-reduce at every larger size too; ``None`` if it never is."""
    found = None
    for n in reversed(list(sizes)):
        if compressed_seconds(machine, codec, n, layout)[1] < best_uncompressed(machine, n, layout)[1]:
            found = n
        else:
            break
    return found


def gbit(rate: str) -> float:
    """``"200mbit"``, ``"10gbit"``, ``"25"`` (Gbit/s) -> Gbit/s."""
    text, scale = rate.strip().lower(), 1.0
    for suffix, unit in (("gbit", 1.0), ("mbit", 1e-3), ("kbit", 1e-6)):
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], unit
            break
    try:
        value = float(text) * scale
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"not a rate: {rate!r} (give a positive number with kbit, mbit or gbit, e.g. 200mbit)")
    return value
