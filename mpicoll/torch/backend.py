"""The ``"mpicoll"`` torch.distributed backend: every ``torch.distributed`` call on mpicoll.

``import mpicoll.torch`` registers it; then, under ``mpiexec`` or ``srun``::

    torch.distributed.init_process_group("mpicoll")     # no MASTER_ADDR, no gloo
    model = torch.nn.parallel.DistributedDataParallel(model)

:class:`ProcessGroup` is a pure-Python ``torch.distributed.ProcessGroup``: torch's Python API
and its C++ users (DDP's reducer, ``_broadcast_coalesced``) call its methods, which run
mpicoll's collectives (``algorithm="auto"``, argument checks across ranks included) on an MPI
communicator of the group's ranks, all in the order they are made. A blocking call
(``async_op=False``) runs on the caller's thread (unless asynchronous ones are still queued); an
asynchronous one (``async_op=True``, and every call from DDP's C++ side) runs on
mpicoll's progress engine and returns a :class:`~mpicoll.torch.work.Work` whose future completes
when the collective does, so DDP overlaps its bucket all-reduces with the backward pass.
``new_group`` and ``new_subgroups`` get MPI sub-communicators (``MPI_Comm_create_group``: only
the members take part). The collectives themselves live in :mod:`mpicoll.torch.collectives` and
:mod:`mpicoll.torch.alltoall`, point-to-point in :mod:`mpicoll.torch.point_to_point`.

Rank ``r`` of torch's world must be rank ``r`` of ``MPI.COMM_WORLD``; the rendezvous of
:mod:`mpicoll.torch.rendezvous` makes it so, and a mismatch (e.g. under ``torchrun``) is refused.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from mpi4py import MPI

from ..errors import ArgumentError, UnsupportedError
from ..transport import Comm
from . import alltoall as exchange
from . import collectives as coll
from . import point_to_point
from .work import Work, finished

NAME = "mpicoll"
#: tag of MPI_Comm_create_group for subgroups; creation runs on the caller's thread, one at a time
_CREATE_TAG = 7_340


class ProcessGroup(dist.ProcessGroup):
    """torch.distributed process group over an MPI communicator (see the module docstring).

    Args:
        mpi_comm: the MPI communicator of the group's ranks (duplicated here; collective).
        timeout: torch's timeout for the group (kept for ``Work.wait`` callers; mpicoll's own
            stall watchdog is ``MPICOLL_TIMEOUT``).
    """

    def __init__(self, mpi_comm: MPI.Intracomm, timeout: timedelta | None = None) -> None:
        self.comm = Comm(mpi_comm)
        self.p2p = Comm(mpi_comm)  # a Dup of its own: torch's tags never meet the collectives'
        super().__init__(self.comm.rank, self.comm.size)
        self.timeout = timeout
        self._closed = False
        self._name, self._desc = "", ""

    def getBackendName(self) -> str:
        """``"mpicoll"``."""
        return NAME

    # torch keeps a group's name and description in its C++ backends, which a Python group has none of
    def getGroupName(self) -> str:
        """The name torch gave the group (its key in torch's registry of groups)."""
        return self._name

    def setGroupName(self, name: str) -> None:
        self._name = name

    def getGroupDesc(self) -> str:
        """torch's description of the group (``"default_pg"``, ``"undefined"``, ...)."""
        return self._desc

    def setGroupDesc(self, desc: str) -> None:
        self._desc = desc

    def allreduce(self, tensors: list[torch.Tensor], opts: Any = None) -> Work:
        """``all_reduce``: sum, avg, product, min, max, band, bor, bxor."""
        return coll.allreduce(self.comm, tensors, coll.options(opts))

    def allreduce_coalesced(self, tensors: list[torch.Tensor], opts: Any = None) -> Work:
        """``all_reduce_coalesced`` and coalesced all-reduces: one fused all-reduce per dtype."""
        return coll.allreduce_coalesced(self.comm, tensors, coll.options(opts))

    def broadcast(self, tensors: list[torch.Tensor], opts: Any = None) -> Work:
        """``broadcast`` from ``opts.rootRank``."""
        return coll.broadcast(self.comm, tensors, coll.options(opts))

    def reduce(self, tensors: list[torch.Tensor], opts: Any = None) -> Work:
        """``reduce`` to ``opts.rootRank``."""
        return coll.reduce(self.comm, tensors, coll.options(opts))

    def allgather(self, output_tensors: list[list[torch.Tensor]], input_tensors: list[torch.Tensor],
                  opts: Any = None) -> Work:
        """``all_gather`` into a list of tensors (sizes may differ by rank)."""
        return coll.allgather(self.comm, output_tensors, input_tensors, coll.options(opts))

    def all_gather_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> Work:
        """``all_gather_into_tensor``: the ranks' inputs, concatenated in rank order."""
        return coll.allgather_into(self.comm, output, input, coll.options(opts))

    _allgather_base = all_gather_single

    def all_gather_single_coalesced(self, outputs: list[torch.Tensor], inputs: list[torch.Tensor],
                                    opts: Any = None) -> Work:
        """Several ``all_gather_into_tensor`` in one call."""
        return coll.coalesced(self.comm, coll.allgather_into, outputs, inputs,
                              coll.options(opts))

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    def allgather_coalesced(self, output_lists: list[list[torch.Tensor]], inputs: list[torch.Tensor],
                            opts: Any = None) -> Work:
        """``all_gather_coalesced``: one ``all_gather`` per input."""
        return coll.coalesced(self.comm, lambda c, o, i, op: coll.allgather(c, [o], [i], op), output_lists,
                              inputs, coll.options(opts))

    def reduce_scatter(self, output_tensors: list[torch.Tensor], input_tensors: list[list[torch.Tensor]],
                       opts: Any = None) -> Work:
        """``reduce_scatter`` from a list of per-rank tensors."""
        return coll.reduce_scatter(self.comm, output_tensors, input_tensors,
                                   coll.options(opts))

    def reduce_scatter_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None) -> Work:
        """``reduce_scatter_tensor``: block ``r`` of the reduced input to rank ``r``."""
        return coll.reduce_scatter_into(self.comm, output, input, coll.options(opts))

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter_single_coalesced(self, outputs: list[torch.Tensor], inputs: list[torch.Tensor],
                                        opts: Any = None) -> Work:
        """Several ``reduce_scatter_tensor`` in one call."""
        return coll.coalesced(self.comm, coll.reduce_scatter_into, outputs, inputs,
                              coll.options(opts))

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    def gather(self, output_tensors: list[list[torch.Tensor]], input_tensors: list[torch.Tensor],
               opts: Any = None) -> Work:
        """``gather`` to ``opts.rootRank`` (an :func:`mpicoll.alltoall` with counts)."""
        return exchange.gather(self.comm, output_tensors, input_tensors, coll.options(opts))

    def scatter(self, output_tensors: list[torch.Tensor], input_tensors: list[list[torch.Tensor]],
                opts: Any = None) -> Work:
        """``scatter`` from ``opts.rootRank`` (an :func:`mpicoll.alltoall` with counts)."""
        return exchange.scatter(self.comm, output_tensors, input_tensors, coll.options(opts))

    def all_to_all_single(self, output: torch.Tensor, input: torch.Tensor, output_split_sizes: list[int],
                          input_split_sizes: list[int], opts: Any = None) -> Work:
        """``all_to_all_single``, with or without split sizes (rows of dimension 0)."""
        return exchange.alltoall_single(self.comm, output, input, list(output_split_sizes), list(input_split_sizes),
                                    coll.options(opts))

    alltoall_base = all_to_all_single

    def alltoall(self, output_tensors: list[torch.Tensor], input_tensors: list[torch.Tensor],
                 opts: Any = None) -> Work:
        """``all_to_all`` of tensor lists (any sizes)."""
        return exchange.alltoall_list(self.comm, output_tensors, input_tensors, coll.options(opts))

    def barrier(self, opts: Any = None) -> Work:
        """``barrier``: returns once every rank of the group has reached it."""
        return coll.barrier(self.comm, coll.options(opts))

    def send(self, tensors: list[torch.Tensor], dst: int, tag: int = 0) -> Work:
        """``send`` / ``isend`` to group rank ``dst``."""
        return point_to_point.send(self.p2p, tensors, dst, tag)

    def recv(self, tensors: list[torch.Tensor], src: int, tag: int = 0) -> Work:
        """``recv`` / ``irecv`` from group rank ``src``."""
        return point_to_point.recv(self.p2p, tensors, src, tag)

    def recv_anysource(self, tensors: list[torch.Tensor], tag: int = 0) -> Work:
        """``recv`` without a source: from whichever rank sends first (``work.source_rank()``)."""
        return point_to_point.recv_anysource(self.p2p, tensors, tag)

    def _start_coalescing(self, device: Any = None) -> None:
        """Coalescing: each call runs as it comes (torch passes coalesced all-reduces, all-gathers and
        reduce-scatters to the ``*_coalesced`` methods, which fuse them)."""

    def _end_coalescing(self, device: Any = None) -> Work:
        return finished("coalescing", [])

    def shutdown(self) -> None:
        """Free the group's communicators (``destroy_process_group``); waits for started collectives."""
        if not self._closed:
            self._closed = True
            self.comm.free()
            self.p2p.free()

    def abort(self) -> None:
        """Refused: MPI cannot cancel a started collective and carry on (torch's abort expects that).

        Raises:
            UnsupportedError: always. A job stuck in a collective is ended by mpicoll's watchdog
                (``MPICOLL_TIMEOUT``), which names the stuck rank and calls ``MPI_Abort``.
        """
        raise UnsupportedError("abort: the mpicoll backend cannot cancel started collectives (MPI has no way to); "
                               "destroy_process_group() ends the group cleanly, and MPICOLL_TIMEOUT=<seconds> makes "
                               "a stuck job end with the name of the rank it waits for")

    def __repr__(self) -> str:
        return f"<mpicoll ProcessGroup rank {self.comm.rank} of {self.comm.size}>"


def _group_comm(opts: Any) -> MPI.Intracomm:
    """The MPI communicator of the group torch asks for (members only; never the non-members)."""
    world = MPI.COMM_WORLD
    ranks = list(opts.global_ranks_in_group) or list(range(opts.group_size))
    if len(ranks) != opts.group_size or world.Get_rank() not in ranks or \
            ranks.index(world.Get_rank()) != opts.group_rank or max(ranks) >= world.Get_size():
        raise ArgumentError(
            f"the mpicoll backend takes its ranks from MPI, but torch asks for rank {opts.group_rank} of "
            f"{opts.group_size} (global ranks {ranks}) while this is rank {world.Get_rank()} of "
            f"{world.Get_size()} in MPI.COMM_WORLD; start the job with mpiexec or srun (not torchrun) and "
            f"leave rank and world_size to MPI (init_process_group('mpicoll'))")
    if ranks == list(range(world.Get_size())):
        return world
    group = world.Get_group().Incl(ranks)
    try:
        return world.Create_group(group, _CREATE_TAG)
    finally:
        group.Free()


def create(opts: Any, backend_options: Any = None) -> ProcessGroup:
    """The creator torch calls (``extended_api=True``) for the default group and every subgroup."""
    mpi_comm = _group_comm(opts)
    try:
        return ProcessGroup(mpi_comm, opts.timeout)
    finally:
        if mpi_comm != MPI.COMM_WORLD:
            mpi_comm.Free()  # the group keeps its own duplicates


def register() -> None:
    """Register ``"mpicoll"`` with torch (devices cpu and cuda). Idempotent."""
    if NAME not in dist.Backend.backend_list:
        dist.Backend.register_backend(NAME, create, extended_api=True, devices=["cpu", "cuda"])
