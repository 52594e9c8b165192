"""The collectives of the mpicoll backend: torch's arguments in, mpicoll's collectives, a Work out.

Each function checks torch's arguments on the caller's thread and builds one *job* (run the
collective on a communicator, copy results back, return the output tensors), which
:func:`~mpicoll.torch.work.launch` runs inline for a blocking call or on the progress engine
for ``async_op=True``. A check that fails on one rank raises there and, through mpicoll's
argument exchange (``MPICOLL_VALIDATE``), a :class:`~mpicoll.PeerError` on the others; ranks that
disagree (sizes, dtypes, ops) get a :class:`~mpicoll.MismatchError` everywhere: nothing hangs.
Data-moving collectives see tensors as bytes (any dtype); reductions use
:mod:`~mpicoll.torch.buffers` for their working dtype. gather, scatter and all-to-all live in
:mod:`~mpicoll.torch.alltoall`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..backend import xp_of
from ..collectives import allgather as _allgather
from ..collectives import allreduce as _allreduce
from ..collectives import broadcast as _broadcast
from ..collectives import reduce as _reduce
from ..collectives import reduce_scatter as _reduce_scatter
from ..errors import ArgumentError, UnsupportedError
from ..transport import Comm
from .buffers import bytes_of, for_bytes, for_reduction, nbytes, reduction_dtype
from .tensors import as_array
from .work import Job, Work, launch, run

Prepared = tuple[Job, Any]


def collective(description: str, mpicoll_name: str) -> Callable[[Callable[..., Prepared]], Callable[..., Work]]:
    """Decorator: ``prepare(comm, *args, opts) -> (job, like)`` becomes a function that returns a
    :class:`Work` (blocking unless ``opts.asyncOp``), with argument errors announced to the peers
    (see :func:`~mpicoll.torch.work.launch`); ``mpicoll_name`` is the collective the job runs."""
    def decorate(prepare: Callable[..., Prepared]) -> Callable[..., Work]:
        @functools.wraps(prepare)
        def start(comm: Comm, *args: Any) -> Work:
            opts = args[-1]
            return launch(comm, description, mpicoll_name, not opts.asyncOp, lambda: prepare(comm, *args))
        return start
    return decorate


_RED = dist.ReduceOp.RedOpType
_OPS = {_RED.SUM: "sum", _RED.AVG: "avg", _RED.PRODUCT: "prod", _RED.MIN: "min", _RED.MAX: "max",
        _RED.BAND: "band", _RED.BOR: "bor", _RED.BXOR: "bxor"}


def options(opts: Any) -> Any:
    """torch's options object, or, for a direct call without one, blocking defaults (root 0, sum)."""
    if opts is not None:
        return opts
    return SimpleNamespace(asyncOp=False, reduceOp=dist.ReduceOp.SUM, rootRank=0, rootTensor=0)


def _op(opts: Any, where: str) -> str:
    reduce_op = opts.reduceOp
    name = _OPS.get(getattr(reduce_op, "op", reduce_op))
    if name is None:
        raise UnsupportedError(f"{where}: ReduceOp {reduce_op} is not supported by the mpicoll backend "
                               f"(PREMUL_SUM is NCCL's: multiply the tensor by the factor, then use SUM)")
    return name


def one_tensor(tensors: Sequence[torch.Tensor], where: str) -> torch.Tensor:
    """The single tensor of torch's per-process list (one device per process, as torch now requires)."""
    if isinstance(tensors, torch.Tensor):
        return tensors
    if len(tensors) != 1:
        raise ArgumentError(f"{where}: the mpicoll backend takes one tensor per process, got {len(tensors)}; "
                            f"use one call per tensor (or the *_coalesced variants)")
    return tensors[0]


def per_rank(tensors: Sequence[torch.Tensor], size: int, where: str) -> list[torch.Tensor]:
    """A list with one tensor per rank of the group, or an :class:`~mpicoll.ArgumentError`."""
    if len(tensors) != size:
        raise ArgumentError(f"{where}: expected one tensor per rank ({size}), got {len(tensors)}")
    return list(tensors)


def _apart(src: Any, dst: Any) -> Any:
    """``src``, or a copy of it when it lies inside ``dst`` (in-place all-gathers, FSDP's included)."""
    return src.copy() if src.size and dst.size and xp_of(dst).may_share_memory(src, dst) else src


@collective("all_reduce", "allreduce")
def allreduce(comm: Comm, tensors: Sequence[torch.Tensor], opts: Any) -> Prepared:
    """``all_reduce`` of one tensor, in place."""
    op = _op(opts, "all_reduce")
    buf = for_reduction(one_tensor(tensors, "all_reduce"), "all_reduce")

    def job(c: Comm) -> list[torch.Tensor]:
        _allreduce(buf.array, op, comm=c, out=buf.array)
        buf.finish()
        return [buf.tensor]

    return job, buf.array


@collective("all_reduce_coalesced", "allreduce")
def allreduce_coalesced(comm: Comm, tensors: Sequence[torch.Tensor], opts: Any) -> Prepared:
    """Every tensor all-reduced; tensors of one dtype fused into one all-reduce, dtypes in a fixed order."""
    op = _op(opts, "all_reduce_coalesced")
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    plan = []
    for dtype in sorted(groups, key=str):
        wide = reduction_dtype(dtype, "all_reduce_coalesced")
        flat = torch.cat([t.detach().reshape(-1).to(wide) for t in groups[dtype]])
        plan.append((groups[dtype], flat, as_array(flat)))

    def job(c: Comm) -> list[torch.Tensor]:
        for group, flat, array in plan:
            _allreduce(array, op, comm=c, out=array)
            offset = 0
            with torch.no_grad():
                for t in group:
                    t.copy_(flat[offset: offset + t.numel()].view(t.shape))
                    offset += t.numel()
        return list(tensors)

    return job, None


@collective("broadcast", "broadcast")
def broadcast(comm: Comm, tensors: Sequence[torch.Tensor], opts: Any) -> Prepared:
    """``broadcast`` of one tensor from ``opts.rootRank``, in place."""
    root = opts.rootRank
    buf = for_bytes(one_tensor(tensors, "broadcast"), copy_in=comm.rank == root)

    def job(c: Comm) -> list[torch.Tensor]:
        _broadcast(buf.array, root, comm=c, out=buf.array)
        buf.finish()
        return [buf.tensor]

    return job, buf.array


@collective("reduce", "reduce")
def reduce(comm: Comm, tensors: Sequence[torch.Tensor], opts: Any) -> Prepared:
    """``reduce`` to ``opts.rootRank``; other ranks' tensors are left as they are."""
    op, root = _op(opts, "reduce"), opts.rootRank
    buf = for_reduction(one_tensor(tensors, "reduce"), "reduce")

    def job(c: Comm) -> list[torch.Tensor]:
        _reduce(buf.array, op, root, comm=c, out=buf.array if c.rank == root else None)
        if c.rank == root:
            buf.finish()
        return [buf.tensor]

    return job, buf.array


def unpack(flat: Any, outputs: Sequence[torch.Tensor]) -> None:
    """Copy consecutive byte blocks of ``flat`` (a NumPy/CuPy uint8 array) into ``outputs``."""
    source = torch.from_numpy(flat) if isinstance(flat, np.ndarray) else torch.from_dlpack(flat)
    offset = 0
    with torch.no_grad():
        for out in outputs:
            size = nbytes(out)
            block = source[offset: offset + size]
            if out.is_contiguous():
                bytes_of(out).copy_(block)
            else:
                out.copy_(block.view(out.dtype).view(out.shape))
            offset += size


@collective("all_gather", "allgather")
def allgather(comm: Comm, output_tensors: Sequence[Sequence[torch.Tensor]], input_tensors: Sequence[torch.Tensor],
              opts: Any) -> Prepared:
    """``all_gather`` into one tensor per rank (sizes may differ by rank)."""
    src = for_bytes(one_tensor(input_tensors, "all_gather"))
    outputs = per_rank(one_tensor(output_tensors, "all_gather"), comm.size, "all_gather")
    counts = [nbytes(o) for o in outputs]
    if counts[comm.rank] != src.array.size:
        raise ArgumentError(f"all_gather: output tensor {comm.rank} holds {counts[comm.rank]} bytes but the input "
                            f"{src.array.size}")
    even = len(set(counts)) == 1

    def job(c: Comm) -> list[torch.Tensor]:
        out = c.scratch.get("torch.gather", sum(counts), np.uint8, xp_of(src.array))
        _allgather(src.array, comm=c, out=out.reshape(c.size, -1) if even else out,
                   counts=None if even else counts)
        unpack(out, outputs)
        return list(outputs)

    return job, src.array


@collective("all_gather_into_tensor", "allgather")
def allgather_into(comm: Comm, output: torch.Tensor, input: torch.Tensor, opts: Any) -> Prepared:
    """``all_gather_into_tensor``: output holds the inputs of ranks 0 .. p-1, in order."""
    if nbytes(output) != comm.size * nbytes(input) or output.dtype != input.dtype:
        raise ArgumentError(f"all_gather_into_tensor: the output must hold {comm.size} inputs of "
                            f"{input.numel()} {input.dtype} elements; got {output.numel()} {output.dtype}")
    out = for_bytes(output, copy_in=False)
    src = for_bytes(input)
    send = _apart(src.array, out.array)

    def job(c: Comm) -> list[torch.Tensor]:
        _allgather(send, comm=c, out=out.array.reshape(c.size, -1))
        out.finish()
        return [output]

    return job, src.array


@collective("reduce_scatter", "reduce_scatter")
def reduce_scatter(comm: Comm, output_tensors: Sequence[torch.Tensor],
                   input_tensors: Sequence[Sequence[torch.Tensor]], opts: Any) -> Prepared:
    """``reduce_scatter``: rank ``r`` gets the reduction of every rank's ``input_list[r]``."""
    op = _op(opts, "reduce_scatter")
    out = for_reduction(one_tensor(output_tensors, "reduce_scatter"), "reduce_scatter", copy_in=False)
    inputs = per_rank(one_tensor(input_tensors, "reduce_scatter"), comm.size, "reduce_scatter")
    counts = [t.numel() for t in inputs]
    if counts[comm.rank] != out.tensor.numel():
        raise ArgumentError(f"reduce_scatter: the output has {out.tensor.numel()} elements but input_list"
                            f"[{comm.rank}] {counts[comm.rank]}")
    flat = torch.cat([t.detach().reshape(-1).to(out.work.dtype) for t in inputs])
    array = as_array(flat)

    def job(c: Comm) -> list[torch.Tensor]:
        _reduce_scatter(array, op, counts=counts, comm=c, out=out.array.reshape(-1))
        out.finish()
        return [out.tensor]

    return job, array


@collective("reduce_scatter_tensor", "reduce_scatter")
def reduce_scatter_into(comm: Comm, output: torch.Tensor, input: torch.Tensor, opts: Any) -> Prepared:
    """``reduce_scatter_tensor``: block ``r`` (of ``p`` equal blocks) of the reduced input to rank ``r``."""
    op = _op(opts, "reduce_scatter_tensor")
    if input.numel() != comm.size * output.numel():
        raise ArgumentError(f"reduce_scatter_tensor: the input must hold {comm.size} x {output.numel()} "
                            f"elements (the output's size), got {input.numel()}")
    out = for_reduction(output, "reduce_scatter_tensor", copy_in=False)
    src = for_reduction(input, "reduce_scatter_tensor")
    send = _apart(src.array, out.array)

    def job(c: Comm) -> list[torch.Tensor]:
        _reduce_scatter(send, op, comm=c, out=out.array.reshape(-1))
        out.finish()
        return [output]

    return job, src.array


def coalesced(comm: Comm, one: Callable[..., Work], outputs: Sequence[Any], inputs: Sequence[Any],
              opts: Any) -> Work:
    """Several calls of ``one(comm, output, input, opts)`` as one Work (all blocking inside one job)."""
    if len(outputs) != len(inputs):
        raise ArgumentError(f"coalesced collective: {len(outputs)} outputs for {len(inputs)} inputs")
    inner = SimpleNamespace(asyncOp=False, reduceOp=getattr(opts, "reduceOp", dist.ReduceOp.SUM))

    def job(c: Comm) -> list[torch.Tensor]:
        for o, i in zip(outputs, inputs, strict=True):
            one(c, o, i, inner).wait()
        return [o for o in outputs if isinstance(o, torch.Tensor)]

    return run(comm, "coalesced", job, not opts.asyncOp)


@collective("barrier", "allreduce")
def barrier(comm: Comm, opts: Any) -> Prepared:
    """Every rank reaches it before any leaves (a one-element all-reduce; with validation on, a rank
    that is in another collective is named instead of hanging)."""
    def job(c: Comm) -> list[torch.Tensor]:
        token = np.zeros(1, dtype=np.int32)
        _allreduce(token, comm=c, out=token)
        return []

    return job, None
