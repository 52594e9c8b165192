"""mpicoll: MPI collectives and gradient compression for Python, on mpi4py.

``import mpicoll`` is cheap: it loads only the configuration and the error classes. MPI (through
mpi4py) is initialized when the first collective or :class:`Comm` is used; numba, cupy and torch
are imported only by the features that need them.

Example (run under ``mpiexec -n 4 python -m mpi4py script.py``)::

    import numpy as np, mpicoll
    x = np.full(1_000_000, mpicoll.rank(), dtype=np.float32)
    y = mpicoll.allreduce(x)            # sum over ranks, algorithm chosen by size
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import config
from .errors import (
    ArgumentError,
    ConfigError,
    DtypeError,
    MismatchError,
    MpicollError,
    NonFiniteError,
    PayloadError,
    PeerError,
    RendezvousError,
    UnsupportedError,
    UsageError,
    WaitTimeoutError,
)

__version__ = "0.1.0"

# Public names that live in modules importing mpi4py: loaded on first attribute access (PEP 562).
_LAZY = {
    "allreduce": "mpicoll.collectives",
    "alltoall": "mpicoll.collectives",
    "reduce_scatter": "mpicoll.collectives",
    "allgather": "mpicoll.collectives",
    "broadcast": "mpicoll.collectives",
    "reduce": "mpicoll.collectives",
    "algorithm_names": "mpicoll.collectives",
    "op_names": "mpicoll.collectives",
    "compressed_allreduce": "mpicoll.aggregation",
    "compressed_iallreduce": "mpicoll.aggregation",
    "AutoCodec": "mpicoll.aggregation",
    "GradientBuckets": "mpicoll.aggregation",
    "iallreduce": "mpicoll.collectives",
    "ialltoall": "mpicoll.collectives",
    "ireduce_scatter": "mpicoll.collectives",
    "iallgather": "mpicoll.collectives",
    "ibroadcast": "mpicoll.collectives",
    "ireduce": "mpicoll.collectives",
    "wait_all": "mpicoll.collectives",
    "Handle": "mpicoll.collectives",
    "Comm": "mpicoll.transport",
    "default_comm": "mpicoll.transport",
    "shared_empty": "mpicoll.transport.shared",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mpicoll' has no attribute {name!r}")
    from .transport.watchdog import start_mpi

    start_mpi()  # these modules import mpi4py: MPI_Init, which waits for every rank, under the watchdog's timer
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def rank() -> int:
    """This process's rank in ``MPI.COMM_WORLD`` (initializes MPI; not collective)."""
    from .transport.watchdog import start_mpi

    return start_mpi().COMM_WORLD.Get_rank()


def size() -> int:
    """The number of ranks in ``MPI.COMM_WORLD`` (initializes MPI; not collective)."""
    from .transport.watchdog import start_mpi

    return start_mpi().COMM_WORLD.Get_size()


__all__ = [
    "ArgumentError",
    "AutoCodec",
    "Comm",
    "ConfigError",
    "DtypeError",
    "GradientBuckets",
    "Handle",
    "MismatchError",
    "MpicollError",
    "NonFiniteError",
    "PayloadError",
    "PeerError",
    "RendezvousError",
    "UnsupportedError",
    "UsageError",
    "WaitTimeoutError",
    "__version__",
    "algorithm_names",
    "allgather",
    "allreduce",
    "alltoall",
    "broadcast",
    "compressed_allreduce",
    "compressed_iallreduce",
    "config",
    "default_comm",
    "iallgather",
    "iallreduce",
    "ialltoall",
    "ibroadcast",
    "ireduce",
    "ireduce_scatter",
    "op_names",
    "rank",
    "reduce",
    "reduce_scatter",
    "shared_empty",
    "size",
    "wait_all",
]
