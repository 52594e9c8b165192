"""The collectives' internal API: what the layers above (aggregation, the adapters, bench) may use
besides the public functions of the package's ``__init__``. Every other module of
:mod:`mpicoll.collectives` is private to it (a structure test keeps it so).

The unvalidated entry points :func:`allgather` and :func:`allreduce` are for code that has
already agreed on its arguments across ranks, once, for a whole protocol: a compressed all-reduce
inside its own :class:`Agreement`, say. They skip the local argument checks and the cross-rank
agreement of the public functions (one collective round each) and run the algorithm ``auto``
picks straight away. Every rank must still call them with matching arguments: arrays of one
dtype, ``counts`` the same list everywhere, in the same order. That is the caller's contract;
a mismatch here is not caught, so derive everything that shapes a call from agreed values
(sizes that were themselves gathered, counts computed from an agreed element count).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import timeline
from ..backend import xp_of
from ..transport import Comm
from . import auto, inband
from .api import run_allgather, run_allreduce
from .auto import OWN_FLAT, across_hosts, choose_for, resolve
from .buffers import check_array, check_finite
from .hierarchical import run_hierarchical
from .nonblocking import run_in_order, start
from .ops import ReduceOp, get_op, work_dtype
from .partition import displacements, even_counts
from .pof2 import Pof2
from .registry import algorithm_names, get_algorithm, register
from .validate import Agreement, exchange

__all__ = [
    "OWN_FLAT",
    "Agreement",
    "Pof2",
    "ReduceOp",
    "across_hosts",
    "algorithm_names",
    "allgather",
    "allreduce",
    "auto",
    "check_array",
    "check_finite",
    "choose_for",
    "displacements",
    "even_counts",
    "exchange",
    "get_algorithm",
    "get_op",
    "inband",
    "register",
    "resolve",
    "run_hierarchical",
    "run_in_order",
    "start",
    "work_dtype",
]


def _recorded(collective: str, comm: Comm, x: Any) -> Any:
    """The timeline's span of a nested call (a no-op object when not recording)."""
    return timeline.collective(collective, comm.serial, bytes=int(x.nbytes), count=int(x.size), dtype=x.dtype.name,
                               algorithm="auto")


def allgather(comm: Comm, x: Any, counts: Sequence[int] | None = None) -> Any:
    """:func:`mpicoll.allgather` without checks or agreement (see the module docstring).

    Args:
        comm: the communicator (already resolved).
        x: this rank's contribution, any dtype.
        counts: elements each rank contributes, the same list on every rank (e.g. sizes that
            were themselves gathered); ``None`` when every rank contributes ``x.size``.

    Returns:
        Without ``counts``: shape ``(p, *x.shape)``; with ``counts``: the 1-D concatenation.
    """
    block_counts = [x.size] * comm.size if counts is None else [int(c) for c in counts]
    shape = (comm.size, *x.shape) if counts is None else (sum(block_counts),)
    out = xp_of(x).empty(shape, dtype=x.dtype)
    with _recorded("allgather", comm, x):
        _, algo = resolve("allgather", "auto", sum(block_counts) * x.dtype.itemsize, comm)
        return run_allgather(comm, algo, x, block_counts, out)


def allreduce(comm: Comm, x: Any, op: str | ReduceOp = "sum", *, algorithm: str = "auto", out: Any = None) -> Any:
    """:func:`mpicoll.allreduce` without checks or agreement (see the module docstring).

    ``x`` must hold the same number of elements of the same dtype on every rank, and ``op`` be
    valid for it; ``out`` (same shape and dtype, ``out=x`` in place) is allocated when ``None``.
    """
    rop = get_op(op)
    out = xp_of(x).empty_like(x) if out is None else out
    with _recorded("allreduce", comm, x):
        _, algo = resolve("allreduce", algorithm, x.nbytes, comm, host=isinstance(x, np.ndarray))
        return run_allreduce(comm, algo, x, rop, out)
