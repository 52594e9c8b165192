"""All-to-all with per-rank counts: rank ``r`` sends block ``j`` of its buffer to rank ``j``.

The public :func:`alltoall` and mpicoll's own algorithms (``native``, ``MPI_Alltoallv``, lives in
:mod:`.native` with MPI's other collectives):

- ``pairwise``: ``p-1`` steps; at step ``k`` rank ``r`` sends to ``r+k`` while receiving from
  ``r-k`` (mod ``p``). One message in flight per direction, so memory and link use stay bounded
  whatever ``p`` is; each directed pair meets at exactly one step, so one tag serves them all.
- ``linear``: every receive and send posted at once, one wait: fewest round trips for small
  blocks, at the price of ``p`` messages in flight.

Sequence- and expert-parallel models (DeepSpeed-Ulysses, mixture-of-experts dispatch) move
activations this way. Nothing is computed: the bytes arrive exactly as they were sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import config
from ..errors import ArgumentError
from ..transport import Comm, as_comm
from ..transport.entry import watched
from ..transport.p2p import irecv, isend, sendrecv, waitall
from .auto import resolve
from .buffers import check_array, check_out, finish, flat_input, flat_output
from .partition import check_counts, displacements
from .registry import register
from .validate import Agreement

#: ``auto`` with counts: ranks send different amounts, so no size is known alike on every rank
#: without one more exchange; the choice then follows the table's rule for the largest messages.
_UNBOUNDED = 1 << 62


def _block(buf: Any, displs: Sequence[int], counts: Sequence[int], rank: int) -> Any:
    return buf[displs[rank]: displs[rank] + counts[rank]]


@register("alltoall", "pairwise")
def pairwise_alltoall(comm: Comm, sendbuf: Any, sendcounts: Sequence[int], recvbuf: Any,
                      recvcounts: Sequence[int]) -> None:
    """``p-1`` pairwise exchanges (see the module docstring); moves ``sendbuf.nbytes`` out and
    ``recvbuf.nbytes`` in, minus this rank's own block, which is copied locally."""
    p, r = comm.size, comm.rank
    sdispls, rdispls = displacements(sendcounts), displacements(recvcounts)
    _block(recvbuf, rdispls, recvcounts, r)[...] = _block(sendbuf, sdispls, sendcounts, r)
    tag = comm.new_tag()
    for k in range(1, p):
        dest, source = (r + k) % p, (r - k) % p
        sendrecv(comm, _block(sendbuf, sdispls, sendcounts, dest), dest,
                 _block(recvbuf, rdispls, recvcounts, source), source, tag)


@register("alltoall", "linear")
def linear_alltoall(comm: Comm, sendbuf: Any, sendcounts: Sequence[int], recvbuf: Any,
                    recvcounts: Sequence[int]) -> None:
    """Every receive, then every send, posted at once; one wait for all of them."""
    p, r = comm.size, comm.rank
    sdispls, rdispls = displacements(sendcounts), displacements(recvcounts)
    _block(recvbuf, rdispls, recvcounts, r)[...] = _block(sendbuf, sdispls, sendcounts, r)
    tag = comm.new_tag()
    order = [(r + k) % p for k in range(1, p)]  # spread the load: not everyone on rank 0 first
    requests = [irecv(comm, _block(recvbuf, rdispls, recvcounts, s), s, tag) for s in order[::-1]
                if recvcounts[s]]
    requests += [isend(comm, _block(sendbuf, sdispls, sendcounts, d), d, tag) for d in order if sendcounts[d]]
    waitall(requests, None, "alltoall")


def _check_even(x: Any, size: int) -> list[int]:
    if x.ndim == 0 or x.shape[0] % size:
        raise ArgumentError(f"alltoall: without counts, x.shape[0] must be a multiple of the {size} ranks "
                            f"(block j, rows j*n/p .. (j+1)*n/p - 1, goes to rank j); x has shape {x.shape}. "
                            f"Pass sendcounts= for blocks of different sizes")
    return [x.size // size] * size


def _exchange_counts(comm: Comm, sendcounts: list[int]) -> list[int]:
    """What every rank sends to this one (``MPI_Alltoall`` of one int64 per rank)."""
    incoming = np.empty(comm.size, dtype=np.int64)
    comm.mpi.Alltoall(np.asarray(sendcounts, dtype=np.int64), incoming)
    return [int(c) for c in incoming]


@watched("alltoall")
def alltoall(x: Any, *, sendcounts: Sequence[int] | None = None, recvcounts: Sequence[int] | None = None,
             algorithm: str = "auto", comm: Any = None, out: Any = None) -> Any:
    """Send block ``j`` of ``x`` to rank ``j``; receive block ``r`` of every rank's ``x``.

    Args:
        x: this rank's data, any dtype (bytes are moved, nothing is computed). Without counts, the
            first dimension is cut into ``p`` equal blocks of rows (it must be a multiple of ``p``);
            with ``sendcounts``, ``x`` is read as a flat array of ``sum(sendcounts)`` elements.
        sendcounts: elements of ``x`` for each rank, in rank order (``MPI_Alltoallv``'s sendcounts).
        recvcounts: elements to receive from each rank. When omitted (with ``sendcounts``) they are
            found with one small ``MPI_Alltoall`` of the counts; when given and validation is on,
            they are checked against what the senders declared, and a mismatch raises on every rank.
        algorithm: ``"auto"``, ``"pairwise"``, ``"linear"`` or ``"native"`` (``MPI_Alltoallv``).
            With counts ``auto`` cannot use a size every rank knows, and takes the table's choice
            for the largest messages.
        comm: as for :func:`mpicoll.allreduce`.
        out: the result buffer (not overlapping ``x``): shaped like ``x`` without counts, else 1-D
            of ``sum(recvcounts)`` elements.

    Returns:
        Without counts, an array shaped like ``x`` whose block ``r`` came from rank ``r``; with
        counts, the 1-D concatenation of the blocks from ranks ``0 .. p-1``. Every rank sends
        ``x.nbytes`` minus its own block, which is copied locally.

    Raises:
        MismatchError: ranks disagree on the dtype, the algorithm, whether counts are used, or
            (validation on) ``recvcounts`` differs from what the senders' ``sendcounts`` say.
        PeerError: another rank's arguments were rejected; that rank raises the specific error.
    """
    c = as_comm(comm)
    with Agreement(c, "alltoall") as agree:
        x = check_array(x, "alltoall")
        given = check_counts(sendcounts, c.size, "alltoall")
        wanted = check_counts(recvcounts, c.size, "alltoall")
        if given is None and wanted is not None:
            raise ArgumentError("alltoall: recvcounts without sendcounts; pass both (or neither, for even blocks)")
        if given is not None and sum(given) != x.size:
            raise ArgumentError(f"alltoall: sendcounts add up to {sum(given)} but x has {x.size} elements")
        counts = given if given is not None else _check_even(x, c.size)
        if given is None:
            out = check_out(out, x.shape, x.dtype, x, "alltoall", in_place=False)
        elif wanted is not None:
            out = check_out(out, (sum(wanted),), x.dtype, x, "alltoall", in_place=False)
        name, algo = resolve("alltoall", algorithm, x.nbytes if given is None else _UNBOUNDED, c)
        agree.set(count=x.size if given is None else -1, dtype=x.dtype, algorithm=name)
    if given is None:
        if x.size == 0:  # the same size on every rank (agreed above): nothing moves anywhere
            return out
        incoming = counts
    elif wanted is None or config.get("validate"):
        incoming = _exchange_counts(c, given)
        if wanted is None:
            out = _checked_out(c, out, incoming, x)
        else:
            _agree_counts(c, wanted, incoming)
    else:
        incoming = wanted
    return _run(c, algo, x, counts, out, incoming)


def _checked_out(comm: Comm, out: Any, incoming: list[int], x: Any) -> Any:
    """The result buffer once the receive counts are known; a bad ``out`` is refused on every rank."""
    with Agreement(comm, "alltoall") as agree:
        out = check_out(out, (sum(incoming),), x.dtype, x, "alltoall", in_place=False)
        agree.set(count=-1, dtype=x.dtype)
    return out


def _agree_counts(comm: Comm, wanted: list[int], incoming: list[int]) -> None:
    with Agreement(comm, "alltoall") as agree:
        if wanted != incoming:
            bad = [r for r in range(comm.size) if wanted[r] != incoming[r]]
            raise ArgumentError(f"alltoall: rank {comm.rank} expects recvcounts {wanted} but ranks {bad} send "
                                f"{[incoming[r] for r in bad]} elements to it; recvcounts[j] must equal rank j's "
                                f"sendcounts[{comm.rank}] (or omit recvcounts to have them exchanged)")
        agree.set(count=-1)


def _run(comm: Comm, algo: Any, x: Any, sendcounts: list[int], out: Any, recvcounts: list[int]) -> Any:
    # with counts, only the sum over all ranks tells whether nothing moves: every rank runs the
    # algorithm (MPI_Alltoallv is collective even for a rank with nothing to send or receive)
    send = flat_input(comm, x, x.dtype, "api.send")
    recv, direct = flat_output(comm, out, x.dtype, "api.recv")
    algo(comm, send, sendcounts, recv, recvcounts)
    return finish(recv, out, direct)
