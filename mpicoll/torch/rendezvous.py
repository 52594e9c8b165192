"""Rendezvous from MPI: ``torch.distributed`` learns rank and world size from the MPI launcher.

torch needs three things before any process group exists: a rank, a world size and a key-value
store shared by all ranks. Under ``mpiexec`` or ``srun`` MPI already knows the first two, so:

- ``init_method="mpi://"`` (a handler registered with torch's public
  ``register_rendezvous_handler``) takes rank and size from ``MPI.COMM_WORLD``. The store is a
  ``TCPStore`` served by rank 0, whose address and port are chosen by rank 0 and sent to the
  others over MPI (``MASTER_ADDR`` / ``MASTER_PORT`` win when set), so every backend, gloo
  included, can use it. ``mpi://?store=hash`` gives each rank a process-local ``HashStore``
  instead: no socket at all, for backends that never use the store, such as ``"mpicoll"``.
- ``init_process_group(backend)`` with no ``init_method`` means ``env://`` in torch, which raises
  when ``MASTER_ADDR`` is unset. :func:`install` wraps torch's ``env://`` handler (the one place
  where mpicoll touches a private torch name, ``torch.distributed.rendezvous._rendezvous_handlers``)
  so that exactly in that case, and only when the process was started by an MPI launcher (or MPI
  is already initialized), the rendezvous goes through ``mpi://`` instead. Wherever torch's own
  handler would succeed, it runs unchanged.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlparse

import torch.distributed as dist

from ..errors import ArgumentError, PeerError, RendezvousError
from ..transport import default_comm

SCHEME = "mpi"
#: environment variables through which MPI launchers (MPICH/Intel hydra, Open MPI, PMIx, Slurm's
#: PMI-2, MVAPICH) tell a process its rank
_LAUNCHER_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_FD")


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
        raise RendezvousError("mpicoll rendezvous: cannot find an address of rank 0 that other hosts can reach; "
                              "set MASTER_ADDR (or use init_method='mpi://?store=hash' with the mpicoll backend)")
    return addresses[0]


def _tcp_store(timeout: timedelta) -> dist.Store:
    """A TCPStore served by rank 0, which binds a free port (or ``MASTER_PORT``) itself and sends its
    address and port to the others over MPI. Collective."""
    comm = default_comm()
    hosts = comm.mpi.allgather(socket.gethostname())
    server, address = None, None
    if comm.rank == 0:
        address = os.environ.get("MASTER_ADDR") or _address(hosts)
        try:
            server = dist.TCPStore(address, int(os.environ.get("MASTER_PORT") or 0), comm.size, True,
                                   timeout=timeout, wait_for_workers=False)
        except Exception as exc:  # the others must not wait for an address that will never come
            comm.mpi.bcast(None, root=0)
            raise RendezvousError(f"mpi:// rendezvous: rank 0 could not serve a TCPStore at {address}: {exc}") from exc
    where = comm.mpi.bcast(None if server is None else (address, server.port), root=0)
    if where is None:
        raise PeerError("mpi:// rendezvous: rank 0 could not serve the TCPStore (see its error); "
                        "init_method='mpi://?store=hash' needs no socket, for the mpicoll backend", rank=0)
    return server if server is not None else dist.TCPStore(where[0], where[1], comm.size, False, timeout=timeout)


def _check_given(query: dict[str, str], rank: int, size: int) -> None:
    for key, mpi_value in (("rank", rank), ("world_size", size)):
        given = int(query.get(key, -1))
        if given not in (-1, mpi_value):
            raise ArgumentError(f"mpi:// rendezvous: {key}={given} was passed but MPI says {mpi_value}; under "
                                f"mpiexec/srun leave rank and world_size out (they come from MPI)")


def mpi_rendezvous_handler(url: str, timeout: timedelta = timedelta(minutes=30),
                           **kwargs: Any) -> Iterator[tuple[dist.Store, int, int]]:
    """torch rendezvous handler for ``mpi://[?store=tcp|hash]``: yields (store, rank, world size).

    Collective over ``MPI.COMM_WORLD`` (every rank must call ``init_process_group``, as always).
    """
    query = dict(parse_qsl(urlparse(url).query))
    kind = query.get("store", "tcp")
    if kind not in ("tcp", "hash"):
        raise ArgumentError(f"mpi:// rendezvous: store={kind!r}; accepted: 'tcp' (shared, the default) or 'hash' "
                            f"(process-local, for backends that never use the store)")
    comm = default_comm()
    _check_given(query, comm.rank, comm.size)
    store = _tcp_store(timeout) if kind == "tcp" else dist.HashStore()
    yield store, comm.rank, comm.size
    raise RendezvousError("mpi:// rendezvous cannot re-rendezvous: MPI's ranks are fixed for the job")


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process, or MPI is initialized already."""
    if any(os.environ.get(v) for v in _LAUNCHER_VARIABLES):
        return True
    mpi = sys.modules.get("mpi4py.MPI")
    return bool(mpi is not None and mpi.Is_initialized())


def _env_or_mpi(original: Any) -> Any:
    def handler(url: str, **kwargs: Any) -> Iterator[tuple[dist.Store, int, int]]:
        if os.environ.get("MASTER_ADDR") or not launched_by_mpi():
            yield from original(url, **kwargs)  # torch's own behaviour, and its errors
            return
        query = dict(parse_qsl(urlparse(url).query))
        for key, variable in (("rank", "RANK"), ("world_size", "WORLD_SIZE")):
            if os.environ.get(variable) and key not in query:
                query[key] = os.environ[variable]
        yield from mpi_rendezvous_handler(f"{SCHEME}://?" + "&".join(f"{k}={v}" for k, v in query.items()), **kwargs)

    handler.mpicoll_wraps = original  # type: ignore[attr-defined]
    return handler


def install() -> None:
    """Register ``mpi://`` and let ``env://`` fall back to it under MPI without ``MASTER_ADDR``. Idempotent."""
    # the module, not the function torch.distributed.rendezvous that shadows its name
    handlers = importlib.import_module("torch.distributed.rendezvous")._rendezvous_handlers
    if SCHEME not in handlers:
        dist.register_rendezvous_handler(SCHEME, mpi_rendezvous_handler)
    env = handlers.get("env")
    if env is not None and not hasattr(env, "mpicoll_wraps"):
        handlers["env"] = _env_or_mpi(env)
