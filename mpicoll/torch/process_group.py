"""Start ``torch.distributed`` (gloo) from the MPI ranks, so that DDP runs under mpiexec or srun."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch.distributed as dist

from ..transport import default_comm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _interface_addresses() -> list[str]:
    """This host's non-loopback IPv4 addresses, read from the interfaces (Linux)."""
    import fcntl
    import struct

    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
            except OSError:  # no IPv4 address on this interface
                continue
            found.append(socket.inet_ntoa(packed[20:24]))
    return found


def _address(hosts: list[str]) -> str:
    """An address of rank 0 that the other ranks can reach."""
    if len(set(hosts)) == 1:
        return "127.0.0.1"
    try:
        address = socket.gethostbyname(socket.gethostname())
        if not address.startswith("127."):
            return address
    except OSError:
        pass
    addresses = _interface_addresses()
    if not addresses:
        raise RuntimeError("mpicoll.torch.init_process_group: cannot find an address of rank 0 that other hosts "
                           "can reach; set MASTER_ADDR")
    return addresses[0]


def init_process_group(backend: str = "gloo", timeout_s: float = 300.0) -> None:
    """``torch.distributed.init_process_group`` with rank and world size taken from MPI.

    Rank 0 chooses the rendezvous address (its host name's address, else its first non-loopback
    interface address; 127.0.0.1 when all ranks share a host) and a free port, and tells the others
    over MPI. ``MASTER_ADDR`` / ``MASTER_PORT`` from the environment win. Does nothing if torch.distributed
    is already initialized. Collective over ``MPI.COMM_WORLD``.
    """
    if dist.is_initialized():
        return
    comm = default_comm()
    hosts = comm.mpi.allgather(socket.gethostname())
    address, port = None, None
    if comm.rank == 0:
        address = os.environ.get("MASTER_ADDR") or _address(hosts)
        port = int(os.environ.get("MASTER_PORT") or _free_port())
    address, port = comm.mpi.bcast((address, port), root=0)
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=comm.rank,
                            world_size=comm.size, timeout=timedelta(seconds=timeout_s))
