"""The fitted machine: latency and bandwidth per link class, reduction and matrix speed, and each
codec's wire ratio and throughput; what :mod:`.costs`' counts cost in seconds on it.

A :class:`Machine` comes from ``mpicoll-bench probe`` (:mod:`mpicoll.model.probe`, seconds under
the job's own launcher) as JSON, or is built by hand for projections (``with_rate``).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ArgumentError
from .costs import Cost


@dataclass(frozen=True)
class Link:
    """A link class: ``alpha`` seconds per message round, ``beta`` seconds per byte, and ``burst``
    bytes it lets through at once after an idle spell (a token-bucket shaper's bucket: a cloud
    VM's or the network bed's ``tc tbf``; 0 on a link that never sends above its rate)."""

    alpha: float
    beta: float
    burst: float = 0.0

    @property
    def gbit(self) -> float:
        """Bandwidth in Gbit/s."""
        return 8e-9 / self.beta if self.beta > 0 else math.inf


#: the two array sizes the probe times local rates at (:data:`Machine.rate_sizes` by default):
#: one that mostly stays in a core's L2 cache on the machines measured, and one well past it
SMALL_BYTES, LARGE_BYTES = 4 << 20, 16 << 20


@dataclass(frozen=True)
class CodecRates:
    """One codec on one kernel provider: wire bytes per input byte, and compress / decode speed in
    input bytes per second; ``kind`` as :attr:`mpicoll.compression.Compressor.kind`. The speeds
    are timed on arrays of the machine's smaller rate size; the ``_large`` ones (0: not measured)
    on its larger one (see :meth:`Machine.seconds`)."""

    kind: str
    ratio: float
    compress_Bps: float
    decode_Bps: float
    widen: float = 1.0  # 16-bit wire floats are added as float32 (see costs.summable)
    rank: int = 0  # PowerSGD's rank
    compress_Bps_large: float = 0.0
    decode_Bps_large: float = 0.0


def _two(values: Any) -> tuple[float, float]:
    """Two sizes, as floats, ``0 < small <= large`` (a ValueError otherwise)."""
    small, large = (float(v) for v in values)
    if not 0 < small <= large < math.inf:
        raise ValueError(f"rate_sizes must be two sizes 0 < small <= large, got {values!r}")
    return small, large


def _blend(small: float, large: float, w: float) -> float:
    """Seconds per byte at weight ``w`` between the small arrays' (0) and the large arrays' (1),
    linearly; without a large-array reading (``large`` 0), the small one's."""
    if large <= 0 or w <= 0:
        return small
    return (1 - w) * small + w * large


def _per_byte(small_Bps: float, large_Bps: float, w: float) -> float:
    """:func:`_blend` for speeds in bytes per second (``large_Bps`` 0: not measured)."""
    return _blend(1.0 / small_Bps, 1.0 / large_Bps if large_Bps > 0 else 0.0, w)


@dataclass
class Machine:
    """Everything the model needs to turn a :class:`~.costs.Cost` into seconds."""

    links: dict[str, Link]
    gamma: float  # seconds per byte added
    flops: float  # floating-point operations per second (matrix products)
    codecs: dict[str, CodecRates] = field(default_factory=dict)
    #: ``MPI_Allreduce``'s measured ``(bytes, seconds)`` per rank count (native is not modelled, only observed)
    native: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    #: where the probe ran (hosts, ranks per host) and on which kernel provider
    probed_on: dict[str, Any] = field(default_factory=dict)
    #: seconds per byte added on arrays of the larger rate size (0: not measured)
    gamma_large: float = 0.0
    #: the array sizes (bytes) the local rates were timed at: ``gamma`` and the codecs' speeds at
    #: the first, ``gamma_large`` and the ``_large`` speeds at the second
    rate_sizes: tuple[float, float] = (SMALL_BYTES, LARGE_BYTES)

    def seconds(self, cost: Cost, codec: str | None = None, n: float | None = None) -> float:
        """The time of ``cost`` on this machine (codec terms with ``codec``'s rates) for a call on
        ``n`` bytes. Local speeds depend on the array size once an array outgrows a core's cache,
        above all where ranks share a core (the bed's probes: ``np.add`` 9-38% slower per byte at
        16 MiB than at 4 MiB in 4 of 5 such configurations; bench/RESULTS.md, issue 17). So the
        speeds are blended between those timed at the two :attr:`rate_sizes`,
        linearly in ``log n`` (the smaller's below it, the larger's above it; without ``n``,
        the smaller's)."""
        w = self._large_weight(n)
        t = 0.0
        for c, rounds in cost.rounds.items():
            t += rounds * self.link(c).alpha
        for c, nbytes in cost.bytes.items():
            t += nbytes * self.link(c).beta
        t += cost.reduce_bytes * _blend(self.gamma, self.gamma_large, w)
        local = cost.flops / self.flops
        if cost.compress_bytes or cost.decode_bytes:
            rates = self.codec(codec) if codec else None
            if rates is not None:
                local += cost.compress_bytes * _per_byte(rates.compress_Bps, rates.compress_Bps_large, w)
                local += cost.decode_bytes * _per_byte(rates.decode_Bps, rates.decode_Bps_large, w)
        return t + local - self._burst_saving(cost, local)

    def _burst_saving(self, cost: Cost, idle: float) -> float:
        """What a shaped link's burst takes off a call whose links idle for ``idle`` seconds (its
        codec work: compressing and PowerSGD's products before a message, decoding after): the link
        banks up to ``burst`` bytes meanwhile and sends them at once, so the call's wire time
        shrinks by ``min(burst, bytes) * beta``, at most ``idle``. The largest saving of any link
        class counts (they idle at the same time). On the bed's 128 KiB bucket at 50 Mbit/s that is
        up to 21 ms: top-k at 16 MiB on 2 hosts measured 56-59 ms against 78 predicted without it
        (bench/RESULTS.md, issue 17). Dense paths send from their first instant: no saving."""
        if idle <= 0:
            return 0.0
        best = max((min(self.link(c).burst, nbytes) * self.link(c).beta for c, nbytes in cost.bytes.items()),
                   default=0.0)
        return min(best, idle)

    def _large_weight(self, n: float | None) -> float:
        """Where ``n`` lies between the two rate sizes: 0 at or below the smaller, 1 at or above
        the larger, linear in ``log n`` between."""
        small, large = self.rate_sizes
        if n is None or n <= small or large <= small:
            return 0.0
        if n >= large:
            return 1.0
        return math.log(n / small) / math.log(large / small)

    def link(self, name: str) -> Link:
        """The link class ``intra`` or ``inter`` (a machine probed on one host reuses ``intra``)."""
        found = self.links.get(name) or self.links.get("intra")
        if found is None:
            raise ArgumentError(f"the model has no {name!r} link; probe on the job's own layout")
        return found

    def codec(self, name: str) -> CodecRates:
        """The rates of codec ``name`` (``none`` needs none)."""
        if name not in self.codecs:
            raise ArgumentError(f"the model has no rates for codec {name!r}; probed: {sorted(self.codecs)}")
        return self.codecs[name]

    def with_rate(self, gbit: float, alpha: float | None = None) -> Machine:
        """A copy whose inter-host link runs at ``gbit`` Gbit/s (latency ``alpha`` if given), at
        that rate always (no burst: a projection is of a link, not of the bed's shaper)."""
        inter = self.links.get("inter") or self.links["intra"]
        links = {**self.links, "inter": Link(inter.alpha if alpha is None else alpha, 8e-9 / gbit)}
        return replace(self, links=links)

    def with_codec_rates(self, measured: dict[str, Any], where: str) -> Machine:
        """A copy whose reduction speed, matrix speed and codec rates are ``measured`` elsewhere:
        ``{"gamma", "flops", "codecs": {name: CodecRates fields}}``, as ``gpu_check`` writes under
        ``codec_rates`` (the kernels of a GPU); codecs reported with an ``error`` keep this
        machine's rates. Links and ``MPI_Allreduce``'s curve stay (they are the network's)."""
        try:
            codecs = {name: CodecRates(**fields) for name, fields in measured["codecs"].items()
                      if "error" not in fields}
            gamma, flops = float(measured["gamma"]), float(measured["flops"])
        except (KeyError, TypeError, ValueError) as error:
            raise ArgumentError(f"not a set of codec rates (gpu_check --json, its codec_rates): {error!r}") from None
        return replace(self, gamma=gamma, flops=flops, codecs={**self.codecs, **codecs}, gamma_large=0.0,
                       probed_on={**self.probed_on, "codecs_from": where})

    def native_seconds(self, p: int, nbytes: float) -> float | None:
        """``MPI_Allreduce``'s observed time on ``p`` ranks: interpolated log-log between probed
        sizes, the smallest size's time below them (latency-bound), and the largest size's
        bandwidth above them; ``None`` for a rank count never probed (native is not modelled)."""
        points = sorted(self.native.get(p, []))
        if not points:
            return None
        if nbytes <= points[0][0]:
            return points[0][1]
        if nbytes >= points[-1][0]:
            return points[-1][1] * nbytes / points[-1][0]
        for (b0, t0), (b1, t1) in itertools.pairwise(points):
            if b0 <= nbytes <= b1:
                f = (math.log(nbytes) - math.log(b0)) / (math.log(b1) - math.log(b0))
                return math.exp(math.log(t0) + f * (math.log(t1) - math.log(t0)))
        return points[-1][1]

    def to_json(self) -> dict[str, Any]:
        """The JSON form (what ``mpicoll-bench probe --json`` writes)."""
        return {"links": {k: asdict(v) for k, v in self.links.items()}, "gamma": self.gamma, "flops": self.flops,
                "codecs": {k: asdict(v) for k, v in self.codecs.items()},
                "native": {str(k): v for k, v in self.native.items()}, "probed_on": self.probed_on,
                "gamma_large": self.gamma_large, "rate_sizes": list(self.rate_sizes)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Machine:
        """Read :meth:`to_json`'s form; a malformed file gets an :class:`ArgumentError` naming the field."""
        try:
            return cls(links={k: Link(float(v["alpha"]), float(v["beta"]), float(v.get("burst", 0.0)))
                              for k, v in data["links"].items()},
                       gamma=float(data["gamma"]), flops=float(data["flops"]),
                       codecs={k: CodecRates(**v) for k, v in data.get("codecs", {}).items()},
                       native={int(k): [(float(b), float(t)) for b, t in v] for k, v in data.get("native", {}).items()},
                       probed_on=dict(data.get("probed_on", {})),
                       gamma_large=float(data.get("gamma_large", 0.0)),
                       rate_sizes=_two(data.get("rate_sizes", (SMALL_BYTES, LARGE_BYTES))))
        except (KeyError, TypeError, ValueError) as error:
            raise ArgumentError(f"not a machine model (mpicoll-bench probe --json): {error!r}") from None

    @classmethod
    def load(cls, path: str | Path) -> Machine:
        """Read a probe's JSON file."""
        return cls.from_json(json.loads(Path(path).read_text()))
