"""What each all-reduce path costs: message rounds, bytes per link class, and local work.

The alpha-beta-gamma model (Hockney; Thakur, Rabenseifner & Gropp 2005) with two link classes and
the codecs' own throughputs. A call on ``p`` ranks spread over ``H`` hosts (``q = p / H`` ranks per
host, block placement: ranks ``0..q-1`` on host 0) of an ``n``-byte float32 array costs

    sum over link classes c of  rounds_c * alpha_c + bytes_c * beta_c
    + reduce_bytes * gamma + compress_bytes / compress_rate + decode_bytes / decode_rate + flops / F

``bytes_c`` is what the busiest link of class ``c`` carries in one direction, per call (links
are full duplex). Across hosts, every rank of a host that sends over the network at the same step
shares that host's link: the bytes are multiplied by the number of those ranks (*contention*).
A flat algorithm on several hosts runs in lockstep, so each of its steps takes the time of its
slowest hop: the model charges every round to the inter-host class as soon as any hop of that
round crosses hosts.

Segments: mpicoll's algorithms move any message longer than ``config.segment_bytes`` as pipeline
segments with up to ``pipeline_depth`` of them in flight, so a round's segments overlap each
other's latency and a round is charged one ``alpha`` however many segments it has. That is a
property of the algorithms, not of the formula: an unsegmented 8 MiB message over the TCP bed ran
at about half the link's rate, and the only path that still sent one (Rabenseifner's allgather,
issue 17) measured 32-37% above its formula until it was segmented.

Each function below names the module whose algorithm it models and gives its formula. ``w`` is a
codec's wire size (``ratio * n``); the codec terms use compress / decode rates in input bytes per
second. The formulas are checked against hand-computed cases in tests/unit/test_costmodel.py and
against measured times on the network bed in bench/RESULTS.md (issue 17).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..config import config
from .rules import DENSE_SWITCH


@dataclass(frozen=True)
class Layout:
    """Where the ranks are: ``hosts`` hosts with ``per_host`` ranks each (``p = hosts * per_host``)."""

    hosts: int
    per_host: int

    @property
    def p(self) -> int:
        return self.hosts * self.per_host

    @classmethod
    def of(cls, hosts: tuple[int, ...]) -> Layout:
        """The layout of a communicator from its ``Comm.hosts`` (each rank's host index); uneven
        hosts count as many ranks per host as the fullest one has."""
        names = set(hosts)
        return cls(len(names), max(hosts.count(h) for h in names))


@dataclass
class Cost:
    """The counted parts of one call (see the module docstring); add two with ``+``."""

    rounds: dict[str, float] = field(default_factory=dict)  # link class -> message rounds
    bytes: dict[str, float] = field(default_factory=dict)  # link class -> bytes on its busiest link
    reduce_bytes: float = 0.0  # bytes added element-wise (gamma)
    compress_bytes: float = 0.0  # input bytes compressed
    decode_bytes: float = 0.0  # input-sized bytes decoded
    flops: float = 0.0  # floating-point operations (PowerSGD's products)

    def __add__(self, other: Cost) -> Cost:
        rounds, nbytes = dict(self.rounds), dict(self.bytes)
        for c, v in other.rounds.items():
            rounds[c] = rounds.get(c, 0.0) + v
        for c, v in other.bytes.items():
            nbytes[c] = nbytes.get(c, 0.0) + v
        return Cost(rounds, nbytes, self.reduce_bytes + other.reduce_bytes, self.compress_bytes + other.compress_bytes,
                    self.decode_bytes + other.decode_bytes, self.flops + other.flops)


def _link(layout: Layout) -> str:
    return "inter" if layout.hosts > 1 else "intra"


def _msg(link: str, rounds: float, nbytes: float) -> Cost:
    return Cost(rounds={link: rounds}, bytes={link: nbytes})


def ring(n: float, layout: Layout) -> Cost:
    """:mod:`mpicoll.collectives.ring`: reduce-scatter then allgather around the ring.

    ``2(p-1)`` rounds of ``n/p`` bytes; reduces ``(p-1)/p n``. With block placement each host has
    one outgoing network hop per step, so there is no contention."""
    p = layout.p
    if p == 1:
        return Cost()
    cost = _msg(_link(layout), 2 * (p - 1), 2 * (p - 1) / p * n)
    cost.reduce_bytes = (p - 1) / p * n
    return cost


def _pof2(p: int) -> int:
    return 1 << (p.bit_length() - 1)


def _fold(n: float, layout: Layout) -> Cost:
    """Non-power-of-two ``p``: the ``p - k`` extra ranks send their data to a partner first and get
    the result back (two rounds of ``n`` bytes, one reduction)."""
    p, k = layout.p, _pof2(layout.p)
    if p == k:
        return Cost()
    link, share = _fold_link(layout)
    cost = _msg(link, 2, 2 * n * share)
    cost.reduce_bytes = n
    return cost


def _pairs_link(pairs: Iterable[tuple[int, int]], per_host: int) -> tuple[str, int]:
    """The link class of a round whose messages go between these rank pairs (both ways; block
    placement: rank ``r`` on host ``r // per_host``), and how many ranks of one host send across its
    network link in it at once."""
    out: dict[int, int] = {}
    for a, b in pairs:
        if a // per_host != b // per_host:
            out[a // per_host] = out.get(a // per_host, 0) + 1
            out[b // per_host] = out.get(b // per_host, 0) + 1
    return ("inter", max(out.values())) if out else ("intra", 1)


@functools.lru_cache(maxsize=4096)
def _fold_link(layout: Layout) -> tuple[str, int]:
    """The fold's link: each extra rank ``2 i`` (``i < p - k``) pairs with ``2 i + 1``."""
    return _pairs_link(((2 * i, 2 * i + 1) for i in range(layout.p - _pof2(layout.p))), layout.per_host)


@functools.lru_cache(maxsize=4096)  # predictions at 1024 ranks ask for the same stages many times
def _stage_link(distance: int, layout: Layout) -> tuple[str, int]:
    """The link class of a pairwise stage of recursive doubling or halving whose partners are
    ``distance`` apart among the ``k`` ranks left after the fold (:mod:`mpicoll.collectives.pof2`:
    group rank ``j`` is real rank ``2 j + 1`` below ``p - k``, ``j + p - k`` above), and how many
    ranks of one host then share its network link. With a power of two and whole hosts this is
    ``inter`` with ``min(per_host, distance)`` from ``distance >= per_host`` on."""
    p, k = layout.p, _pof2(layout.p)
    rem = p - k

    def real(j: int) -> int:
        return 2 * j + 1 if j < rem else j + rem

    return _pairs_link(((real(j), real(j ^ distance)) for j in range(k) if j < j ^ distance), layout.per_host)


def recursive_doubling(n: float, layout: Layout) -> Cost:
    """:mod:`mpicoll.collectives.recursive_doubling`: ``log2 k`` pairwise exchanges of the whole
    array (``k`` the largest power of two <= p), partners ``1, 2, 4, ...`` apart; each reduces ``n``."""
    k = _pof2(layout.p)
    cost = _fold(n, layout)
    for i in range(int(math.log2(k))):
        link, share = _stage_link(1 << i, layout)
        cost = cost + _msg(link, 1, n * share)
        cost.reduce_bytes += n
    return cost


def rabenseifner(n: float, layout: Layout) -> Cost:
    """:mod:`mpicoll.collectives.rabenseifner`: recursive-halving reduce-scatter then
    recursive-doubling allgather; stage ``i`` moves ``n / 2^(i+1)`` bytes each way, partners
    ``k/2, k/4, ...`` apart in the reduce-scatter and the reverse in the allgather.

    ``2 log2 k`` rounds (plus the fold's 2), ``2 (k-1)/k n`` bytes (plus the fold's ``2 n``), and
    ``(k-1)/k n`` reduced: on ``k`` ranks of one host each, the same bytes as the ring in
    ``log2 k`` instead of ``k-1`` rounds per phase. Both phases and the fold go in pipeline
    segments (see the module docstring), so each stage is one latency plus its bytes, and the
    stages follow one another (the sum of per-stage terms). The last halving stage and the first
    doubling stage (same partner) run fused, each finished segment sent back at once, as the
    ring's two phases overlap: a segment still crosses twice (two latencies) and each direction
    still carries both stages' bytes, so no term changes; the fusion only hides the reduce-scatter's
    tail, which the model does not price for the ring either."""
    k = _pof2(layout.p)
    cost = _fold(n, layout)
    stages = int(math.log2(k))
    for i in range(stages):
        link, share = _stage_link(k >> (i + 1), layout)
        part = n / (1 << (i + 1))
        cost = cost + _msg(link, 2, 2 * part * share)  # once in the reduce-scatter, once in the allgather
        cost.reduce_bytes += part
    return cost


@functools.lru_cache(maxsize=4096)
def _tree_phases(layout: Layout) -> tuple[str, int, int, int, int]:
    """The binary tree's two phases on ``layout`` (heap order around rank 0, block placement): the
    link class, the segments the busiest sender puts on its link per segment of the array in the
    reduce (``up``) and in the broadcast (``down``), and each phase's pipeline fill in segments.

    A message crossing hosts loads its sender's host link, once per rank of that host that sends
    across in the same phase (on one host, each rank's own sends count). Per segment, the busiest
    link needs ``M`` segment times; a segment reaches a node after the sum of the loads ``m`` along
    its path from the leaf (reduce) or from the root (broadcast), so the last one arrives
    ``sum(m) - M`` segment times after the busiest link has sent its last: the fill is the largest
    such sum over all paths, less ``M``."""
    p, q = layout.p, layout.per_host
    edges = [((child - 1) // 2, child) for child in range(1, p)]  # (parent, child)
    inter = layout.hosts > 1

    def load(senders: list[int]) -> dict[int, int]:  # sends across hosts per host, or per rank on one host
        out: dict[int, int] = {}
        for rank in senders:
            key = rank // q if inter else rank
            out[key] = out.get(key, 0) + 1
        return out

    crossing = [(a, b) for a, b in edges if not inter or a // q != b // q]
    up, down = load([b for _, b in crossing]), load([a for a, _ in crossing])
    m_up, m_down = max(up.values()), max(down.values())

    def hop(a: int, b: int, loads: dict[int, int], sender: int) -> int:
        if inter and a // q == b // q:
            return 0  # shared memory: fast beside the network, no load on a host link
        return loads[sender // q if inter else sender]

    reach_up, reach_down = [0] * p, [0] * p  # summed loads from rank 0 to each rank, per phase
    for a, b in edges:  # heap order: a parent comes before its children
        reach_up[b] = reach_up[a] + hop(a, b, up, b)
        reach_down[b] = reach_down[a] + hop(a, b, down, a)
    return ("inter" if inter else "intra", m_up, m_down, max(0, max(reach_up) - m_up),
            max(0, max(reach_down) - m_down))


def tree(n: float, layout: Layout, segment: float | None = None) -> Cost:
    """:mod:`mpicoll.collectives.tree`: a pipelined reduce up a binary tree, then a pipelined
    broadcast down it; ``2 (ceil(log2(p+1)) - 1)`` rounds, ``c n`` reduced by a node with ``c``
    children.

    Each rank runs the reduce to its end before the broadcast, so the phases add up. Per phase the
    busiest link carries ``M n`` (:func:`_tree_phases`: ``M = 1`` in the reduce and 2 in the
    broadcast with a rank per host; more where several ranks of a host send across at once),
    plus the pipeline's fill: ``F`` more segments of ``s = min(segment_bytes, n)`` along the
    slowest path. Bytes on the busiest link: ``(M_up + M_down) n + (F_up + F_down) s``. With a
    rank per host that is ``3 n`` from 3 ranks, ``3 n + 2 s`` on 4 and ``3 n + 5 s`` on 8 (the
    deeper trees the bed measured at 3.5-4.6 n at 4 MiB, issue 17, and 4.1-4.2 n on 2 hosts x 2).
    Links shape what they send; a switch port that two children send into at once would also
    make the reduce ingress-bound (``c n`` in), which the network bed, shaping egress only, does
    not show: projections of ``tree`` to switched networks may be low by up to ``n``."""
    p = layout.p
    if p == 1:
        return Cost()
    if segment is None:
        segment = config.get("segment_bytes")
    link, m_up, m_down, fill_up, fill_down = _tree_phases(layout)
    nbytes = (m_up + m_down) * n + (fill_up + fill_down) * min(segment, n)
    cost = _msg(link, 2 * (math.ceil(math.log2(p + 1)) - 1), nbytes)
    cost.reduce_bytes = min(2, p - 1) * n
    return cost


def hierarchical(n: float, layout: Layout, across: str = "ring") -> Cost:
    """:mod:`mpicoll.collectives.hierarchical`: reduce-scatter inside each host (ring on ``q``
    ranks), an all-reduce of each ``n/q`` part across the ``H`` hosts (all ``q`` parts at once, so
    the host's link carries ``q`` of them: ``2(H-1)/H n`` per host for the ring), allgather inside
    the host."""
    q, hosts = layout.per_host, layout.hosts
    cost = Cost()
    if q > 1:
        cost = cost + _msg("intra", 2 * (q - 1), 2 * (q - 1) / q * n)
        cost.reduce_bytes += (q - 1) / q * n
    if hosts > 1:
        inner = DENSE[across](n / q, Layout(hosts, 1))
        inner.bytes = {c: v * q for c, v in inner.bytes.items()}  # the q owners share the host's link
        cost = cost + inner
    return cost


DENSE = {"ring": ring, "recursive_doubling": recursive_doubling, "rabenseifner": rabenseifner, "tree": tree}


def dense(algorithm: str, n: float, layout: Layout) -> Cost:
    """The cost of one of mpicoll's own all-reduce algorithms (``hierarchical`` included)."""
    if algorithm == "hierarchical":
        return hierarchical(n, layout)
    if algorithm not in DENSE:
        raise KeyError(f"no cost formula for all-reduce algorithm {algorithm!r}; "
                       f"have {sorted([*DENSE, 'hierarchical'])}")
    return DENSE[algorithm](n, layout)


def ring_allgather(each: float, layout: Layout) -> Cost:
    """A ring allgather of ``each`` bytes per rank: ``p-1`` rounds, each rank receives ``(p-1) each``."""
    p = layout.p
    return _msg(_link(layout), p - 1, (p - 1) * each) if p > 1 else Cost()


# ------------------------------------------------------------------------------------ compressed paths

def summable(n: float, ratio: float, layout: Layout, algorithm: str = "ring", widen: float = 1.0) -> Cost:
    """:mod:`mpicoll.aggregation.summable` (fp16, bf16, random-k, none): the dense algorithm on
    the wire section (``w = ratio n`` bytes); compress and decode ``n`` once. 16-bit wire floats
    are decoded to float32, added and encoded again at every reduction step: ``widen = 2`` counts
    those reductions on the decoded bytes."""
    cost = dense(algorithm, ratio * n, layout)
    cost.reduce_bytes *= widen
    cost.compress_bytes += n
    cost.decode_bytes += n
    return cost


def sparse_allgather(n: float, ratio: float, layout: Layout) -> Cost:
    """:mod:`mpicoll.aggregation.sparse` (``sparse_allgather``): an allgather of 8-byte sizes, an
    allgatherv of every rank's pairs (``(p-1) w`` received), then ``p`` scatter-adds into a zeroed
    dense sum (``n`` written, ``p w`` read)."""
    p = layout.p
    cost = ring_allgather(8, layout) + ring_allgather(ratio * n, layout)
    cost.compress_bytes += n
    cost.reduce_bytes += n + p * ratio * n
    return cost


def sparse_rd(n: float, ratio: float, layout: Layout) -> Cost:
    """:mod:`mpicoll.aggregation.sparse` (``sparse_rd``): pairwise merges along recursive
    doubling's ``log2 k`` stages (``k`` the largest power of two <= p). The merged set at most
    doubles each stage (disjoint indices: the worst case, which random data approaches at low
    density) up to the ``p w`` pairs of all ranks (``w = ratio n`` bytes each), and once it passes
    the dense switch it goes as the dense array of ``n``. A non-power of two folds first: the
    ``p - k`` extra ranks hand their ``w`` to a partner, which carries up to ``2 w`` into the
    stages, and they get the finished vector back at the end (up to ``p w``, or ``n``): two more
    rounds, the second the largest message of all. The vector is made dense once (``n`` written),
    at the end or where it passes the switch. Pairs go as the codec's own (a 4-byte index per
    value): ``w`` is its payload."""
    p, k = layout.p, _pof2(layout.p)
    w, cost = ratio * n, Cost()

    def wire(size: float) -> float:  # pairs, or the dense array once past the switch
        return min(size, n) if size <= DENSE_SWITCH * 2 * n else n

    size = w
    if p > k:  # the fold
        link, share = _fold_link(layout)
        cost = cost + _msg(link, 1, w * share)
        cost.reduce_bytes += w
        size = 2 * w
    for i in range(int(math.log2(k))):
        link, share = _stage_link(1 << i, layout)
        nbytes = wire(min(size, p * w))
        cost = cost + _msg(link, 1, nbytes * share)
        cost.reduce_bytes += nbytes
        size *= 2
    final = wire(min(size, p * w)) if p > 1 else w
    if p > k:  # the finished vector back to the extra ranks
        link, share = _fold_link(layout)
        cost = cost + _msg(link, 1, final * share)
    cost.compress_bytes += n
    cost.reduce_bytes += n  # made dense once: at the end, or at the merge that passes the switch
    return cost


def two_phase(n: float, ratio: float, layout: Layout) -> Cost:
    """:mod:`mpicoll.aggregation.two_phase`: an all-to-all of chunk payloads (``p-1`` rounds,
    ``(p-1)/p w``), the owner decodes and adds ``p`` chunks of ``n/p``, compresses its sum again,
    and an allgather of the owners' payloads (``p-1`` rounds, ``(p-1)/p w``); every rank decodes
    all chunks (``n``). Sizes travel with the payloads (probed), so no extra round."""
    p = layout.p
    if p == 1:
        return Cost(compress_bytes=n, decode_bytes=n)
    cost = _msg(_link(layout), 2 * (p - 1), 2 * (p - 1) / p * ratio * n)
    cost.compress_bytes += n + n / p
    cost.decode_bytes += n + n  # the owner's p chunks of n/p, then all p chunks of the result
    cost.reduce_bytes += n
    return cost


def allgather_decode(n: float, ratio: float, layout: Layout) -> Cost:
    """:mod:`mpicoll.aggregation.allgather_decode`: compress once, allgather sizes and payloads
    (``(p-1) w`` received), decode all ``p`` and add them in rank order."""
    p = layout.p
    cost = ring_allgather(8, layout) + ring_allgather(ratio * n, layout)
    cost.compress_bytes += n
    cost.decode_bytes += p * n
    cost.reduce_bytes += p * n
    return cost


def powersgd(n: float, rank: int, layout: Layout, algorithm: str | Callable[[float], str] = "ring") -> Cost:
    """:mod:`mpicoll.aggregation.lowrank`: the ``n``-byte array as an ``a x b`` float32 matrix
    (``a b = n / 4``, as square as its factors allow); two all-reduces of ``P`` (``a r``) and ``Q``
    (``b r``) floats, one after the other. The local work (products ``M Q``, ``M^T P``, ``P Q^T``:
    ``6 a b r`` flops, and a Gram-Schmidt of ``P``) is counted as compressing and decoding ``n``
    bytes, priced by PowerSGD's own compress and decompress speed that the probe measures (its
    ``flops`` are recorded too, for reference). ``algorithm`` may be a function of a factor's
    bytes: the path chooses the algorithm for each factor's own size, not for ``n``."""
    elements = max(1, int(n // 4))
    a = _near_square(elements)
    b = elements // a
    r = min(rank, a, b)
    pick = algorithm if callable(algorithm) else (lambda _nbytes: algorithm)
    cost = dense(pick(4 * a * r), 4 * a * r, layout) + dense(pick(4 * b * r), 4 * b * r, layout)
    cost.compress_bytes += n
    cost.decode_bytes += n
    return cost


def _near_square(elements: int) -> int:
    """The largest divisor of ``elements`` that is at most its square root (the matrix's rows)."""
    for a in range(math.isqrt(elements), 0, -1):
        if elements % a == 0:
            return a
    return 1


PATHS = {"summable": summable, "sparse_allgather": sparse_allgather, "sparse_rd": sparse_rd,
         "two_phase": two_phase, "allgather_decode": allgather_decode}
