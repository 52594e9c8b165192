"""Thread settings for the Numba CPU kernels (applied before Numba is imported) and for the BLAS
matrix products mpicoll runs (:func:`blas_share`).

Imported for its effect by :mod:`.numba_cpu`; the user's own environment variables always win.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

# OpenMP worker threads spin between parallel regions by default; with several MPI ranks per
# node that spinning starves the ranks' own busy-polling (a compressed all-reduce of 1000
# elements took 0.2 s instead of 1 ms at 3 ranks on 2 cores). Sleep instead, unless told otherwise.
# This must happen before Numba loads its OpenMP threading layer.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _local_ranks() -> int:
    """MPI ranks on this node, from the launcher's environment (1 when not launched by one)."""
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE",
                 "SLURM_TASKS_PER_NODE"):  # the last one reads like "2(x3),1": its first number
        value = os.environ.get(name, "").split("(")[0].split(",")[0]
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def _default_threads() -> int:
    """A fair share of this process's cores: with several ranks per node, each rank's kernels get
    cores / ranks threads; more would oversubscribe the node (parallel regions then wait for
    descheduled threads: a 25K-element fp16 encode took 20 ms instead of 20 us at 4 ranks on 2 cores)."""
    machine = os.cpu_count() or 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine
    if cores < machine:  # the launcher bound this rank to its share of the cores already
        return cores
    return max(1, cores // _local_ranks())


if "NUMBA_NUM_THREADS" not in os.environ and "numba" not in sys.modules:  # the user's setting wins
    os.environ["NUMBA_NUM_THREADS"] = str(_default_threads())


_BLAS_SETTINGS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "BLIS_NUM_THREADS")


@functools.cache
def _blas_controller() -> object | None:
    if any(name in os.environ for name in _BLAS_SETTINGS):
        return None  # the user chose: leave BLAS alone
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None


@contextlib.contextmanager
def blas_share() -> Iterator[None]:
    """While any thread is within such a block, BLAS (NumPy's ``@``) uses this rank's fair share of
    the cores (cores / ranks on this node).

    BLAS libraries start one spinning thread per core in every process: with two ranks on two
    cores, PowerSGD's thin products made a training step 3x slower (94 ms against 31 ms). The
    limit is process-wide (BLAS has one setting), so other threads' products are capped too while
    a block is active; the original setting returns when the last block ends. Nothing is changed
    when the user set ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OMP_NUM_THREADS`` or
    ``BLIS_NUM_THREADS``. Costs about 10 us.
    """
    global _blas_users, _blas_limiter
    controller = _blas_controller()
    if controller is None:
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_limiter = controller.limit(limits=_default_threads(), user_api="blas")  # type: ignore[attr-defined]
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None
