"""Start ``torch.distributed`` from the MPI ranks, so that DDP runs under mpiexec or srun."""

from __future__ import annotations

from datetime import timedelta

import torch.distributed as dist

from .rendezvous import SCHEME


def init_process_group(backend: str = "mpicoll", timeout_s: float = 300.0) -> None:
    """``torch.distributed.init_process_group`` with rank and world size taken from MPI.

    Args:
        backend: ``"mpicoll"`` (the default: every ``torch.distributed`` call on mpicoll's
            collectives, see :mod:`mpicoll.torch.backend`), ``"gloo"``, or any other backend.
        timeout_s: torch's timeout for the store and the backend.

    The rendezvous is ``init_method="mpi://"`` (:mod:`mpicoll.torch.rendezvous`): rank 0 serves a
    ``TCPStore`` at its host name's address (else its first non-loopback interface address;
    127.0.0.1 when all ranks share a host) on a free port and tells the others over MPI;
    ``MASTER_ADDR`` / ``MASTER_PORT`` from the environment win. Does nothing if
    torch.distributed is already initialized. Collective over ``MPI.COMM_WORLD``.

    ``torch.distributed.init_process_group("mpicoll")`` alone works as well under an MPI launcher.
    """
    if dist.is_initialized():
        return
    dist.init_process_group(backend, init_method=f"{SCHEME}://", timeout=timedelta(seconds=timeout_s))
