"""Compressed hierarchical all-reduce: exact sums inside each host, compression only between hosts.

The hierarchical schedule of :mod:`mpicoll.collectives.hierarchical` with a compressed cross-host
step: each shard's owners (one per host) run the compressed all-reduce path that ``auto`` picks for
the compressor on their communicator, keyed ``(key, "shard", s)`` so that error feedback keeps one
residual per shard. Inside a host nothing is compressed (shared memory is not the bottleneck),
and with one host nothing is compressed at all. Shards cut across packed tensors, so ``parts``
is not used here (PowerSGD with ``parts`` takes its own path, whose sums are hierarchical).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from ..collectives.internal import get_algorithm, get_op, register, run_hierarchical
from ..compression import Compressor
from ..transport import Comm
from .choice import choose_path
from .path import Parts, Path, Prepared, acc_dtype


class HierarchicalPath(Path):
    """See the module docstring."""

    def prepare(self, comm: Comm, x: Any, compressor: Compressor, key: Hashable, parts: Parts = None,
                average: bool = False) -> Prepared:
        flat = np.ascontiguousarray(x).reshape(-1)
        work = flat.astype(acc_dtype(flat.dtype), copy=False)  # sums of float16 in float32
        return Prepared(compressor, None, state=(x.shape, work, key), average=average)

    def run(self, comm: Comm, prepared: Prepared) -> Any:
        shape, work, key = prepared.state
        total = np.empty_like(work)
        commits = []  # the shards' deferred state updates: the API runs them once every rank succeeded

        def cross(cross_comm: Comm, piece: Any, shard: int) -> None:
            inner = get_algorithm("compressed_allreduce", choose_path(prepared.compressor, piece, cross_comm))
            shard_key = (key, "shard", shard)
            part = prepared.guard(f"compressing shard {shard}", inner.prepare, cross_comm, piece, prepared.compressor,
                                  shard_key)
            if part is None:  # the peers already run the protocol: take part with nothing to add
                part = inner.prepare(cross_comm, np.zeros_like(piece), prepared.compressor, shard_key)
            piece[...] = inner.run(cross_comm, part)
            prepared.errors.extend(part.errors)
            if part.commit is not None:
                commits.append(part.commit)

        run_hierarchical(comm, work, total, get_op("sum"), cross)
        if commits:
            prepared.commit = lambda: _run_all(commits)
        return prepared.mean(total, comm.size).reshape(shape)


def _run_all(steps: list) -> None:
    for step in steps:
        step()


register("compressed_allreduce", "hierarchical")(HierarchicalPath())
