"""The public collectives: ``allreduce``, ``reduce_scatter``, ``allgather``, ``broadcast``, ``reduce``.

Each function checks its arguments locally, resolves ``algorithm="auto"``, checks across ranks
that everyone passed the same arguments (``config.validate``), runs the registered algorithm on
1-D working buffers and puts the result where the caller asked. All are blocking and collective:
every rank of the communicator must call them, in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import timeline
from ..backend import synchronize, xp_of
from ..config import config
from ..errors import ArgumentError
from ..transport import Comm, as_comm
from ..transport.entry import watched
from . import repeat
from .auto import resolve
from .buffers import check_array, check_finite, check_out, check_root, finish, flat_input, flat_output, in_out
from .inband import carries
from .ops import ReduceOp, get_op, work_dtype
from .partition import check_counts, even_counts
from .validate import Agreement


def _wire(algo: Any, *args: Any) -> None:
    """Run the algorithm: the messages and reductions (the timeline's ``wire`` phase)."""
    if not timeline.recording():
        algo(*args)
        return
    t0 = timeline.now_ns()
    try:
        algo(*args)
    finally:
        timeline.phase("wire", t0)


def _average(work: Any, rop: ReduceOp, size: int) -> None:
    if rop.average:
        t0 = timeline.now_ns()
        xp_of(work).divide(work, size, out=work)
        timeline.phase("average", t0)


def _copy_out(work: Any, out: Any, direct: bool) -> Any:
    if direct:  # the result is already in place: nothing to record
        return finish(work, out, direct)
    t0 = timeline.now_ns()
    result = finish(work, out, direct)
    timeline.phase("copy out", t0)
    return result


def allreduce(x: Any, op: str | ReduceOp = "sum", *, algorithm: str = "auto", comm: Any = None,
              out: Any = None) -> Any:
    """Combine ``x`` element-wise across all ranks; every rank gets the result.

    Args:
        x: this rank's contribution (NumPy or CuPy array, any shape; float16/32/64, int32/64).
        op: ``"sum"``, ``"prod"``, ``"min"``, ``"max"``, ``"avg"`` (sum / number of ranks, float only),
            or the bitwise ``"band"``, ``"bor"``, ``"bxor"`` (integers only).
        algorithm: ``"auto"``, ``"ring"``, ``"tree"``, ``"recursive_doubling"``, ``"rabenseifner"``,
            ``"hierarchical"`` (shared memory inside hosts, the network between them) or ``"native"``
            (``MPI_Allreduce``). ``auto`` picks ``hierarchical`` when the ranks span several hosts
            with several ranks on some host, else it reads the tuned table.
        comm: an :class:`mpicoll.Comm`, an mpi4py communicator, or ``None`` for the default.
        out: where to write the result (same shape and dtype as ``x``); ``out=x`` works in place.

    Returns:
        The result, bitwise identical on every rank and across repeated calls with mpicoll's own
        algorithms (``native`` gives what the MPI library gives: min/max with NaN or -0.0 may
        differ between ranks there). float16 is accumulated in float32 and rounded once. The
        ring moves ``2(p-1)/p * x.nbytes`` per rank.

    A repeat of an agreed call (same shape, dtype, op and algorithm, plain NumPy arrays, settings
    unchanged) runs from the plan its first call left (:mod:`.repeat`): no local checks, the same
    messages, so every guarantee here holds for it too.

    Raises:
        MismatchError: ranks passed different counts, dtypes, ops or algorithms (validation on).
        PeerError: another rank's arguments were rejected (validation on); that rank raises the
            specific error.
    """
    result = repeat.fast(comm, x, op, algorithm, out)  # a planned repeat with nothing to watch or record
    if result is not repeat.MISS:
        return result
    return _allreduce(x, op, algorithm=algorithm, comm=comm, out=out)


@watched("allreduce")
def _allreduce(x: Any, op: str | ReduceOp = "sum", *, algorithm: str = "auto", comm: Any = None,
               out: Any = None) -> Any:
    """:func:`allreduce` 's full path: under the stall watchdog and the timeline."""
    c = as_comm(comm)
    given, stamp = out, config.stamp  # the settings this call decides with (a plan is made only if unchanged)
    planned = repeat.lookup(c, x, op, algorithm, out, stamp)  # a repeat: its plan, the same messages
    if planned is not None:
        return planned[0].run(x, out, planned[1])
    with Agreement(c, "allreduce") as agree:
        rop = get_op(op)
        x = check_array(x, "allreduce")
        rop.check_dtype(x.dtype, "allreduce")
        check_finite(x, c.rank, "allreduce")
        out = check_out(out, x.shape, x.dtype, x, "allreduce")
        dtype = work_dtype(x.dtype)
        if algorithm in ("auto", "recursive_doubling") and config.get("validate") \
                and carries(x, x.size * dtype.itemsize):
            # small and checked: recursive doubling in the agreement's own messages (see .inband)
            name, algo = "recursive_doubling", None
            agree.reduce_along(flat_input(c, x, dtype, "api.send"), rop)  # read only: x and out untouched if refused
        else:
            name, algo = resolve("allreduce", algorithm, x.nbytes, c, host=isinstance(x, np.ndarray))
        agree.set(count=x.size, dtype=x.dtype, op=rop.name, algorithm=name)
    if agree.reduced is not None:  # a scratch array, or on one rank the (read-only) input itself
        if c.size > 1:
            _average(agree.reduced, rop, c.size)
        repeat.remember(c, x, given, op, rop, algorithm, name, None, stamp)
        return finish(agree.reduced, out, False)
    repeat.remember(c, x, given, op, rop, algorithm, name, algo, stamp)
    return run_allreduce(c, algo, x, rop, out)


def run_allreduce(c: Comm, algo: Any, x: Any, rop: ReduceOp, out: Any) -> Any:
    """The part of :func:`allreduce` after the checks and the agreement (see :mod:`.internal`)."""
    if x.size == 0:
        return out
    synchronize(x)
    send, recv, direct = in_out(c, x, out, work_dtype(x.dtype))
    _wire(algo, c, send, recv, rop)
    if rop.average:  # tested here too: the small all-reduce's per-call Python is its cost (issue 20)
        _average(recv, rop, c.size)
    return out if direct else _copy_out(recv, out, direct)


@watched("reduce_scatter")
def reduce_scatter(x: Any, op: str | ReduceOp = "sum", *, counts: Sequence[int] | None = None,
                   algorithm: str = "auto", comm: Any = None, out: Any = None) -> Any:
    """Reduce ``x`` element-wise across ranks and give rank ``r`` block ``r`` of the result.

    Args:
        x: this rank's contribution, read as a flat array of ``sum(counts)`` elements.
        op: as for :func:`allreduce`.
        counts: elements of each rank's block; by default ``x.size`` split as evenly as possible
            (the first ``x.size % p`` ranks get one more).
        algorithm: ``"auto"``, ``"ring"`` or ``"native"``.
        comm: as for :func:`allreduce`.
        out: 1-D buffer of ``counts[rank]`` elements (not overlapping ``x``).

    Returns:
        This rank's block of the reduction. The ring moves ``(p-1)/p * x.nbytes`` per rank.
    """
    c = as_comm(comm)
    with Agreement(c, "reduce_scatter") as agree:
        rop = get_op(op)
        x = check_array(x, "reduce_scatter")
        rop.check_dtype(x.dtype, "reduce_scatter")
        check_finite(x, c.rank, "reduce_scatter")
        counts = check_counts(counts, c.size, "reduce_scatter") or even_counts(x.size, c.size)
        if sum(counts) != x.size:
            raise ArgumentError(f"reduce_scatter: counts add up to {sum(counts)} but x has {x.size} elements")
        out = check_out(out, (counts[c.rank],), x.dtype, x, "reduce_scatter", in_place=False)
        name, algo = resolve("reduce_scatter", algorithm, x.nbytes, c)
        agree.set(count=x.size, dtype=x.dtype, op=rop.name, algorithm=name, counts=counts)
    if x.size == 0:
        return out
    synchronize(x)
    dtype = work_dtype(x.dtype)
    send = flat_input(c, x, dtype, "api.send")
    recv, direct = flat_output(c, out, dtype, "api.recv")
    _wire(algo, c, send, recv, rop, counts)
    _average(recv, rop, c.size)
    return _copy_out(recv, out, direct)


@watched("allgather")
def allgather(x: Any, *, counts: Sequence[int] | None = None, algorithm: str = "auto", comm: Any = None,
              out: Any = None) -> Any:
    """Gather every rank's ``x`` on every rank.

    Args:
        x: this rank's contribution, any dtype (bytes are moved, nothing is computed).
        counts: elements each rank contributes, for contributions of different sizes; then
            ``x.size`` must equal ``counts[rank]`` and the result is their 1-D concatenation.
        algorithm: ``"auto"``, ``"ring"`` or ``"native"``.
        comm: as for :func:`allreduce`.
        out: the result buffer (not overlapping ``x``).

    Returns:
        Without ``counts``: an array of shape ``(p, *x.shape)`` whose row ``r`` is rank ``r``'s ``x``.
        With ``counts``: a 1-D array of ``sum(counts)`` elements. Moves ``(p-1)/p`` of it per rank.
    """
    c = as_comm(comm)
    with Agreement(c, "allgather") as agree:
        x = check_array(x, "allgather")
        given = check_counts(counts, c.size, "allgather")
        if given is not None and given[c.rank] != x.size:
            raise ArgumentError(f"allgather: counts[{c.rank}] = {given[c.rank]} but this rank's x has {x.size} "
                                f"elements")
        block_counts = given or [x.size] * c.size
        shape = (sum(block_counts),) if given is not None else (c.size, *x.shape)
        out = check_out(out, shape, x.dtype, x, "allgather", in_place=False)
        # the total size, the same on every rank even when contributions differ
        name, algo = resolve("allgather", algorithm, sum(block_counts) * x.dtype.itemsize, c)
        agree.set(count=-1 if given else x.size, dtype=x.dtype, algorithm=name, counts=given)
    return run_allgather(c, algo, x, block_counts, out)


def run_allgather(c: Comm, algo: Any, x: Any, block_counts: Sequence[int], out: Any) -> Any:
    """The part of :func:`allgather` after the checks and the agreement (see :mod:`.internal`)."""
    if sum(block_counts) == 0:
        return out
    synchronize(x)
    send = flat_input(c, x, x.dtype, "api.send")
    recv, direct = flat_output(c, out, x.dtype, "api.recv")
    _wire(algo, c, send, recv, block_counts)
    return _copy_out(recv, out, direct)


@watched("broadcast")
def broadcast(x: Any, root: int = 0, *, algorithm: str = "auto", comm: Any = None, out: Any = None) -> Any:
    """Copy ``root``'s ``x`` to every rank.

    Args:
        x: at ``root`` the data; elsewhere an array of the same shape and dtype whose contents
            are ignored (and left unchanged unless ``out is x``).
        root: the rank that holds the data.
        algorithm: ``"auto"``, ``"tree"`` or ``"native"``.
        comm: as for :func:`allreduce`.
        out: the result buffer; ``out=x`` broadcasts in place, as ``MPI_Bcast`` does.

    Returns:
        ``root``'s data, on every rank.
    """
    c = as_comm(comm)
    with Agreement(c, "broadcast") as agree:
        x = check_array(x, "broadcast")
        root = check_root(root, c, "broadcast")
        out = check_out(out, x.shape, x.dtype, x, "broadcast")
        name, algo = resolve("broadcast", algorithm, x.nbytes, c)
        agree.set(count=x.size, dtype=x.dtype, root=root, algorithm=name)
    if x.size == 0:
        return out
    buf, direct = flat_output(c, out, x.dtype, "api.recv")
    if c.rank == root and not (out is x and direct):
        synchronize(x)
        buf.reshape(x.shape)[...] = x
    _wire(algo, c, buf, root)
    return _copy_out(buf, out, direct)


@watched("reduce")
def reduce(x: Any, op: str | ReduceOp = "sum", root: int = 0, *, algorithm: str = "auto", comm: Any = None,
           out: Any = None) -> Any | None:
    """Combine ``x`` element-wise across ranks; only ``root`` gets the result.

    Args:
        x, op, algorithm, comm: as for :func:`allreduce` (algorithms ``"tree"`` and ``"native"``).
        root: the rank that receives the result.
        out: the result buffer at ``root`` (ignored elsewhere).

    Returns:
        The result at ``root``; ``None`` on the other ranks.
    """
    c = as_comm(comm)
    with Agreement(c, "reduce") as agree:
        rop = get_op(op)
        x = check_array(x, "reduce")
        rop.check_dtype(x.dtype, "reduce")
        check_finite(x, c.rank, "reduce")
        root = check_root(root, c, "reduce")
        at_root = c.rank == root
        out = check_out(out, x.shape, x.dtype, x, "reduce") if at_root else None
        name, algo = resolve("reduce", algorithm, x.nbytes, c)
        agree.set(count=x.size, dtype=x.dtype, op=rop.name, root=root, algorithm=name)
    if x.size == 0:
        return out
    synchronize(x)
    dtype = work_dtype(x.dtype)
    if at_root:
        send, recv, direct = in_out(c, x, out, dtype)
    else:
        send, recv, direct = flat_input(c, x, dtype, "api.send"), None, False
    _wire(algo, c, send, recv, rop, root)
    if not at_root:
        return None
    _average(recv, rop, c.size)
    return _copy_out(recv, out, direct)
