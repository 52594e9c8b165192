"""Collective algorithms and the public collective functions.

Importing this package registers every algorithm (one module each) with :mod:`.registry`.
Other layers use this package's exports and :mod:`.internal` (the unvalidated entry points and
the helpers aggregation, the adapters and bench may use); every other module here is private
to the package, which ``tests/unit/test_structure.py`` checks.
"""

from . import hierarchical, native, rabenseifner, recursive_doubling, ring, shm, tree  # noqa: F401  (registration)
from .alltoall import alltoall
from .api import allgather, allreduce, broadcast, reduce, reduce_scatter
from .nonblocking import (
    Handle,
    iallgather,
    iallreduce,
    ialltoall,
    ibroadcast,
    ireduce,
    ireduce_scatter,
    wait_all,
)
from .ops import ReduceOp, op_names
from .registry import COLLECTIVES, algorithm_names

__all__ = [
    "COLLECTIVES",
    "Handle",
    "ReduceOp",
    "algorithm_names",
    "allgather",
    "allreduce",
    "alltoall",
    "broadcast",
    "iallgather",
    "iallreduce",
    "ialltoall",
    "ibroadcast",
    "ireduce",
    "ireduce_scatter",
    "op_names",
    "reduce",
    "reduce_scatter",
    "wait_all",
]
