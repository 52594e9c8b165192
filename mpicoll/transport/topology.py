"""Which rank runs on which host.

Hosts are found with ``MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)`` (the ranks that can share
memory) and numbered in the order of their lowest rank. ``config.host_layout`` overrides it for
communicators of matching size, e.g. ``MPICOLL_HOST_LAYOUT=2,1`` makes ranks 0-1 one host and
rank 2 another: how tests exercise multi-host algorithms on one machine.
"""

from __future__ import annotations

from typing import Any

from ..config import config
from ..errors import ConfigError


def parse_layout(text: str) -> list[int]:
    """``"2,1"`` -> ``[2, 1]`` (ranks per host, in rank order)."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"host_layout {text!r}: expected ranks per host, e.g. '2,2' or '2,1'")
    return sizes


def host_layout(mpi_comm: Any) -> tuple[int, ...]:
    """The host index of every rank of ``mpi_comm``. Collective: every rank makes the same calls
    whatever its settings, and the override must be the same on every rank (``ConfigError`` on
    every rank otherwise: ranks that saw different hosts would run different algorithms)."""
    from mpi4py import MPI

    size = mpi_comm.Get_size()
    local = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        leader = local.allreduce(mpi_comm.Get_rank(), op=MPI.MIN)
    finally:
        local.Free()
    override = config.get("host_layout")
    leaders, overrides = zip(*mpi_comm.allgather((leader, override)), strict=True)
    if len(set(overrides)) > 1:
        listing = "; ".join(f"rank {rank}: {value!r}" for rank, value in enumerate(overrides))
        raise ConfigError(f"host_layout (MPICOLL_HOST_LAYOUT) differs between ranks ({listing}); set the same value "
                          f"on every rank, or leave it unset")
    if override:
        sizes = parse_layout(override)
        if sum(sizes) == size:
            return tuple(host for host, n in enumerate(sizes) for _ in range(n))
    numbering = {rank: index for index, rank in enumerate(sorted(set(leaders)))}
    return tuple(numbering[rank] for rank in leaders)
