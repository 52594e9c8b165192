"""Hierarchical all-reduce: shared memory inside a host, the network only between hosts.

With several ranks per host, a flat ring sends ``2(p-1)/p`` of the data over the inter-host links
from every rank. Here the data crosses the network once per host instead:

1. reduce-scatter inside each host (ring, shared memory): local rank ``j`` ends with the local
   sum of its part of the buffer;
2. all-reduce of each part across hosts, among the ranks that own that part, one per host, all
   parts at the same time: every local rank drives its own part, so all of them use the link;
3. allgather inside each host.

Uneven hosts: the buffer is cut into ``L`` shards, ``L`` the most ranks on any host; on a host
with ``l`` ranks, local rank ``j`` owns a contiguous run of about ``L / l`` shards, so shard
``s`` has exactly one owner per host and ``L`` cross-host communicators (one per shard) connect
them. A rank owning several shards reduces them in shard order, which every cross-host group
follows too, so the groups never wait on each other in a cycle. One rank per host degenerates to
the cross-host all-reduce alone; one host, to the local reduce-scatter and allgather.

Moves ``2 (l-1)/l * n`` bytes per rank inside a host and, per host, ``2 (H-1)/H * n`` bytes over
its link (``H`` hosts), against ``2 (p-1)/p * n * (ranks per host)`` for the flat ring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backend import xp_of
from ..transport import Comm
from ..transport.watchdog import waiting_on
from . import auto
from .ops import ReduceOp
from .partition import displacements, even_counts
from .registry import get_algorithm, register
from .ring import ring_allgather, ring_reduce_scatter

CrossStep = Callable[[Comm, Any, int], None]


@dataclass
class Hierarchy:
    """The sub-communicators of one communicator's hosts (see the module docstring)."""

    local: Comm
    hosts: int
    shards: int
    local_shards: list[range]  # the shards each local rank owns
    cross: dict[int, Comm]  # shard -> its owners, one per host, in host order

    @property
    def owned(self) -> range:
        return self.local_shards[self.local.rank]

    def layout(self, count: int) -> tuple[list[int], list[int], list[int]]:
        """How ``count`` elements split: each shard's count and start, and each local rank's
        count (its owned shards are contiguous, so its block starts at its first shard's start)."""
        shard_counts = even_counts(count, self.shards)
        local_counts = [sum(shard_counts[s] for s in owned) for owned in self.local_shards]
        return shard_counts, displacements(shard_counts), local_counts

    def cross_steps(self, recvbuf: Any, shard_counts: list[int], shard_displs: list[int],
                    cross_step: CrossStep, base: int = 0) -> None:
        """``cross_step`` on every shard this rank owns; ``recvbuf`` holds elements from ``base`` on."""
        if self.hosts == 1:
            return
        for s in self.owned:
            lo = shard_displs[s] - base
            piece = recvbuf[lo: lo + shard_counts[s]]
            if piece.size:
                cross_step(self.cross[s], piece, s)

    def close(self) -> None:
        """Free the sub-communicators. Collective (from :meth:`Comm.free`)."""
        for c in (self.local, *self.cross.values()):
            c.mpi.Free()


def hierarchy(comm: Comm) -> Hierarchy:
    """``comm``'s hierarchy, built on first use (collective) and cached."""
    found = comm.cache.get("hierarchy")
    if found is not None:
        return found
    from mpi4py import MPI

    waiting_on(None, "building the host hierarchy")
    host = comm.hosts[comm.rank]
    per_host = [comm.hosts.count(h) for h in range(max(comm.hosts) + 1)]
    shards = max(per_host)
    local = Comm(comm.mpi.Split(host, comm.rank), dup=False, hosts=(0,) * per_host[host])
    blocks = even_counts(shards, local.size)
    local_shards = [range(start, start + n) for start, n in zip(displacements(blocks), blocks, strict=True)]
    cross = {}
    for s in range(shards):
        mine = s in local_shards[local.rank]
        split = comm.mpi.Split(0 if mine else MPI.UNDEFINED, host)
        if mine:
            cross[s] = Comm(split, dup=False, hosts=tuple(range(split.Get_size())))
    found = comm.cache["hierarchy"] = Hierarchy(local, len(per_host), shards, local_shards, cross)
    return found


def cross_allreduce(op: ReduceOp) -> CrossStep:
    """The cross-host step of an all-reduce: ``auto``'s algorithm among one rank per host."""
    def step(cross: Comm, piece: Any, shard: int) -> None:
        name = auto.choose_for("allreduce", piece.nbytes, cross)  # one rank per host: never hierarchical
        get_algorithm("allreduce", name)(cross, piece, piece, op)
    return step


def run_hierarchical(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp, cross_step: CrossStep) -> None:
    """Reduce-scatter in the host, ``cross_step(cross_comm, piece, shard)`` on every owned shard
    (in place, any reduction across hosts), allgather in the host."""
    h = hierarchy(comm)
    shard_counts, shard_displs, local_counts = h.layout(sendbuf.size)
    start = shard_displs[h.owned.start]
    mine = recvbuf[start: start + local_counts[h.local.rank]]
    if h.local.size == 1:
        mine[...] = sendbuf[start: start + mine.size]
    else:
        xp = xp_of(sendbuf)
        if xp.may_share_memory(sendbuf, recvbuf):  # in place: the reduce-scatter must not read what it wrote
            sendbuf = comm.scratch.get("hier.send", sendbuf.size, sendbuf.dtype, xp)
            sendbuf[...] = recvbuf
        ring_reduce_scatter(h.local, sendbuf, mine, op, local_counts)
    h.cross_steps(recvbuf, shard_counts, shard_displs, cross_step)
    if h.local.size > 1:
        ring_allgather(h.local, mine, recvbuf, local_counts)


@register("allreduce", "hierarchical")
def hierarchical_allreduce(comm: Comm, sendbuf: Any, recvbuf: Any, op: ReduceOp) -> None:
    """Hierarchical all-reduce (see the module docstring); the cross-host step uses ``auto``."""
    run_hierarchical(comm, sendbuf, recvbuf, op, cross_allreduce(op))
