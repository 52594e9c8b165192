"""Horovod's framework-neutral basics on mpicoll: start-up, ranks and hosts, reduction ops.

:mod:`mpicoll.horovod.torch` re-exports all of it (``hvd.init()``, ``hvd.rank()``, ...). Hosts are
mpicoll's (``MPI_COMM_TYPE_SHARED``, or ``MPICOLL_HOST_LAYOUT``).
"""

from __future__ import annotations

import enum
import weakref
from typing import Any

from ..errors import ArgumentError, UnsupportedError
from ..transport import Comm, as_comm


class ReduceOp(enum.IntEnum):
    """Horovod's reduction operations."""

    Average = 0
    Sum = 1
    Adasum = 2
    Min = 3
    Max = 4
    Product = 5


Average, Sum, Adasum, Min, Max, Product = (ReduceOp.Average, ReduceOp.Sum, ReduceOp.Adasum, ReduceOp.Min,
                                           ReduceOp.Max, ReduceOp.Product)
OP_NAMES = {Average: "avg", Sum: "sum", Min: "min", Max: "max", Product: "prod"}
global_process_set = object()  # the only process set: every rank of the communicator given to init()

_state: dict[str, Any] = {"comm": None, "optimizer": None}


def init(comm: Any = None, process_sets: Any = None) -> None:
    """Start (MPI is initialized by mpi4py). ``comm``: an mpi4py communicator to run on (default:
    ``COMM_WORLD``); Horovod's lists of ranks and ``process_sets`` are not supported."""
    if process_sets is not None or isinstance(comm, list):
        raise UnsupportedError("mpicoll.horovod: process sets and rank lists are not supported; pass an mpi4py "
                               "communicator (e.g. from MPI.COMM_WORLD.Split) as comm")
    if _state["comm"] is None:
        _state["comm"] = as_comm(comm)


def shutdown() -> None:
    """Forget the communicator (MPI itself is finalized by mpi4py at exit)."""
    _state["comm"], _state["optimizer"] = None, None


def is_initialized() -> bool:
    """Whether :func:`init` was called."""
    return _state["comm"] is not None


def rank() -> int:
    """This process's rank."""
    return comm().rank


def size() -> int:
    """The number of ranks."""
    return comm().size


def _local_ranks() -> list[int]:
    c = comm()
    return [r for r, host in enumerate(c.hosts) if host == c.hosts[c.rank]]


def local_rank() -> int:
    """This rank's index among the ranks on its host."""
    return _local_ranks().index(comm().rank)


def local_size() -> int:
    """The number of ranks on this host."""
    return len(_local_ranks())


def _cross_ranks() -> list[int]:
    c = comm()
    hosts = c.hosts
    mine = local_rank()
    return [r for r in range(c.size) if [q for q in range(c.size) if hosts[q] == hosts[r]].index(r) == mine]


def cross_rank() -> int:
    """This rank's index among the ranks with its local rank (one per host)."""
    return _cross_ranks().index(comm().rank)


def cross_size() -> int:
    """The number of ranks with this rank's local rank (the number of hosts, when they are alike)."""
    return len(_cross_ranks())


def mpi_threads_supported() -> bool:
    """Whether MPI runs with ``MPI_THREAD_MULTIPLE`` (mpicoll's engine needs it)."""
    from mpi4py import MPI

    return MPI.Query_thread() == MPI.THREAD_MULTIPLE


def mpi_enabled() -> bool:
    """Always true: everything runs on MPI."""
    return True


mpi_built = mpi_enabled


def gloo_enabled() -> bool:
    """Always false: there is no gloo controller (nor NCCL, DDL, CCL builds)."""
    return False


gloo_built = nccl_built = ddl_built = ccl_built = rocm_built = gloo_enabled


def cuda_built() -> bool:
    """Whether mpicoll can take CUDA tensors here (CuPy importable)."""
    import importlib.util

    return importlib.util.find_spec("cupy") is not None


def barrier() -> None:
    """Wait until every rank gets here."""
    comm().mpi.Barrier()


def check_process_set(process_set: Any) -> None:
    """Refuse any process set but the global one."""
    if process_set is not global_process_set:
        raise UnsupportedError("mpicoll.horovod: only the global process set is supported")


def remember_optimizer(optimizer: Any) -> None:
    """The optimizer :func:`mpicoll.horovod.torch.join` shadows (the last one made; weakly held)."""
    _state["optimizer"] = weakref.ref(optimizer)


def last_optimizer() -> Any:
    """The optimizer :func:`remember_optimizer` noted, if it is still alive."""
    ref = _state["optimizer"]
    return ref() if ref is not None else None


def comm() -> Comm:
    """The communicator :func:`init` chose."""
    if _state["comm"] is None:
        raise ArgumentError("mpicoll.horovod has not been initialized; call hvd.init() first")
    return _state["comm"]
