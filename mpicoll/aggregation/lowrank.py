"""PowerSGD's all-reduce: two small all-reduces instead of one big one (Vogels et al., 2019).

For a :class:`~mpicoll.compression.powersgd.PowerSGD` compressor, optionally inside
:class:`~mpicoll.compression.ErrorFeedback`, on an array that packs one or more tensors
(``parts``, e.g. a gradient bucket; without it, the whole array is one tensor):

1. (``prepare``, local) every tensor ``t`` of this rank, plus its residual, as an ``n x m``
   matrix ``M_t``; ``P_t = M_t Q_t`` with the warm-start ``Q_t`` that every rank holds identically;
2. all-reduce every ``P_t`` at once (one buffer, sum); every rank orthonormalizes the same
   ``P_t`` into ``P^_t``;
3. ``Q_t = M_t^T P^_t`` (local); with error feedback the rank keeps ``M_t - P^_t Q_t^T``, what the
   projection dropped from its own tensor (the residuals and the result add up to the exact sum);
4. all-reduce every ``Q_t`` at once; the result is ``P^_t Q_t^T`` and ``Q_t`` the next warm
   start, the same on every rank because it is an all-reduced value.

A packed 1-D tensor (a bias) and a tensor that low rank would not shrink (``(n + m) r >= n m``)
travel exactly, in the second buffer, as in torch's PowerSGD hook; an array that is one tensor
(no ``parts``, or one part), even 1-D, is compressed as one matrix. When the ranks span several
hosts with several ranks on some, the sums of ``P`` and ``Q`` are hierarchical all-reduces
(exact inside each host), which keeps ``parts`` meaningful there too. Everything is float32 on the wire
and goes through one of our dense algorithms, so results are bitwise identical on every rank.
Wire per rank: that algorithm's cost on ``sum (n_t + m_t) r`` values instead of ``sum n_t m_t``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..collectives.internal import choose_for, get_algorithm, get_op, register
from ..compression import Compressor, ErrorFeedback
from ..compression.powersgd import WIRE, PowerSGD, as_matrix, orthonormalize, reconstruct
from ..errors import UnsupportedError
from ..kernels.threads import blas_share
from ..transport import Comm
from .path import GuardedOp, Parts, Path, Prepared


@dataclass
class Segment:
    """One tensor of the packed array: where it lies, its matrix, and where its factors go.

    ``rank == 0``: sent exactly, at ``q_start`` in the second buffer."""

    start: int
    size: int
    key: Hashable
    n: int = 0
    m: int = 0
    rank: int = 0
    p_start: int = 0
    q_start: int = 0


def plan(power: PowerSGD, shape: tuple[int, ...], parts: Parts, key: Hashable) -> tuple[list[Segment], int, int]:
    """The segments of an array of ``shape`` packing ``parts`` (checked by the API: they hold exactly
    its elements), and the sizes of the P and Q buffers."""
    shapes = [tuple(shape)] if parts is None else [tuple(s) for s in parts]
    sizes = [math.prod(s) for s in shapes]
    segments, start, p_total, q_total = [], 0, 0, 0
    for i, (part, size) in enumerate(zip(shapes, sizes, strict=True)):
        seg = Segment(start, size, key if len(shapes) == 1 else (key, "part", i))
        n, m, r = power.layout(part)
        is_matrix = len(shapes) == 1 or len(part) >= 2  # a packed 1-D tensor is a bias: exact, as in torch
        if is_matrix and (n + m) * r < size:
            seg.n, seg.m, seg.rank, seg.p_start, seg.q_start = n, m, r, p_total, q_total
            p_total, q_total = p_total + n * r, q_total + m * r
        segments.append(seg)
        start += size
    for seg in segments:  # exact tensors ride after the Q factors
        if not seg.rank:
            seg.q_start, q_total = q_total, q_total + seg.size
    return segments, p_total, q_total


@dataclass
class _Work:
    power: PowerSGD
    feedback: ErrorFeedback | None
    key: Hashable
    step: int
    corrected: Any
    flat: Any
    segments: list[Segment]
    matrices: list[Any]
    p: Any
    q_size: int


def _corrected(comm: Comm, feedback: ErrorFeedback, x: Any, key: Hashable) -> Any:
    """``x`` plus its residual, in a scratch buffer of the communicator (no fresh array of the
    gradient's size to allocate and touch each step). The residual itself is only rewritten in
    :meth:`LowRankPath.run`, so a call that fails before (a peer's bad arguments) leaves it as it was."""
    residual = feedback.residuals.get(key)
    if residual is None:
        return x
    if not (isinstance(residual, np.ndarray) and residual.shape == x.shape):
        return feedback.corrected(x, key)  # checks the shape, moves a restored residual
    out = comm.scratch.get("lowrank.corrected", x.size, x.dtype).reshape(x.shape)
    return np.add(x, residual, out=out, casting="unsafe")


def _allreduce_sum(comm: Comm, a: Any, prepared: Prepared) -> None:
    """Sum the flat ``a`` over the ranks, in place: hierarchically when the ranks span several hosts
    with several ranks on some (exact sums inside each host), else the table's dense choice."""
    if a.size:
        name = choose_for("allreduce", a.nbytes, comm, own=True)  # hierarchical across hosts
        get_algorithm("allreduce", name)(comm, a, a, GuardedOp(get_op("sum"), prepared))


def _p_of(w: _Work, seg: Segment) -> Any:
    return w.p[seg.p_start: seg.p_start + seg.n * seg.rank].reshape(seg.n, seg.rank)


def _q_of(q: Any, seg: Segment) -> Any:
    return q[seg.q_start: seg.q_start + seg.m * seg.rank].reshape(seg.m, seg.rank)


class LowRankPath(Path):
    """See the module docstring."""

    uses_shape = True  # the matrices follow the tensor's shape, not only its element count

    def prepare(self, comm: Comm, x: Any, compressor: Compressor, key: Hashable, parts: Parts = None,
                average: bool = False) -> Prepared:
        feedback = compressor if isinstance(compressor, ErrorFeedback) else None
        power = feedback.inner if feedback is not None else compressor
        if not isinstance(power, PowerSGD):
            raise UnsupportedError(f"compressed_allreduce: the powersgd path needs the powersgd compressor, "
                                   f"got {compressor!r}")
        segments, p_size, q_size = plan(power, tuple(x.shape), parts, key)
        corrected = _corrected(comm, feedback, x, key) if feedback is not None else x
        flat = np.ascontiguousarray(corrected).reshape(-1)
        step = power.next_step(key)
        p = np.empty(p_size, WIRE)
        matrices = []
        with blas_share():
            self._project(power, segments, flat, p, step, matrices)
        work = _Work(power, feedback, key, step, corrected, flat, segments, matrices, p, q_size)
        return Prepared(compressor, None, state=work, average=average)

    @staticmethod
    def _project(power: PowerSGD, segments: list[Segment], flat: Any, p: Any, step: int, matrices: list) -> None:
        """``P_t = M_t Q_t`` of every compressed segment, into ``p``; the matrices into ``matrices``."""
        for seg in segments:
            if seg.rank:
                matrix = as_matrix(flat[seg.start: seg.start + seg.size], seg.n, seg.m)
                np.matmul(matrix, power.start_q(seg.key, seg.m, seg.rank, step),
                          out=p[seg.p_start: seg.p_start + seg.n * seg.rank].reshape(seg.n, seg.rank))
                matrices.append(matrix)
            else:
                matrices.append(None)

    def run(self, comm: Comm, prepared: Prepared) -> Any:
        w: _Work = prepared.state
        _allreduce_sum(comm, w.p, prepared)
        q = np.zeros(w.q_size, WIRE)  # stays zero if the local step fails (recorded): the Q sum still runs
        prepared.guard("projecting on the summed P", self._project_q, comm, prepared, q)
        _allreduce_sum(comm, q, prepared)
        for seg in w.segments:
            if seg.rank:
                w.power.remember(seg.key, _q_of(q, seg), w.step)
        return prepared.mean(self._assemble(w, q), comm.size).reshape(w.corrected.shape)

    def _project_q(self, comm: Comm, prepared: Prepared, q: Any) -> None:
        """``Q_t = M_t^T orthonormal(P_t)`` into ``q`` (exact tensors copied), and with error feedback
        what the projection dropped from this rank's own array, kept once every rank has succeeded."""
        w: _Work = prepared.state
        with blas_share():
            for seg, matrix in zip(w.segments, w.matrices, strict=True):
                if seg.rank:
                    p = orthonormalize(_p_of(w, seg))
                    np.matmul(matrix.T, p, out=_q_of(q, seg))
                else:
                    q[seg.q_start: seg.q_start + seg.size] = w.flat[seg.start: seg.start + seg.size]
        if w.feedback is not None:
            scratch = comm.scratch.get("lowrank.mine", w.flat.size, WIRE)  # no fresh pages to touch each step
            mine = self._assemble(w, q, scratch).reshape(w.corrected.shape)
            prepared.commit = lambda: _keep_residual(w, mine)

    @staticmethod
    def _assemble(w: _Work, q: Any, out: Any = None) -> Any:
        """The flat float32 array the factors in ``w.p`` and ``q`` stand for (into ``out`` if given)."""
        out = np.empty(w.flat.size, WIRE) if out is None else out
        for seg in w.segments:
            piece = out[seg.start: seg.start + seg.size]
            if seg.rank:
                reconstruct(_p_of(w, seg), _q_of(q, seg), seg.size, piece)
            else:
                piece[...] = q[seg.q_start: seg.q_start + seg.size]
        return out


def _keep_residual(w: _Work, mine: Any) -> None:
    """``residual = corrected - mine``, in the residual's own buffer where it can (written only after
    the call has succeeded everywhere: a failed call must leave it as it was)."""
    residual = w.feedback.residuals.get(w.key)
    if (isinstance(residual, np.ndarray) and residual.shape == w.corrected.shape
            and residual.dtype == w.corrected.dtype and residual.flags.writeable):  # reuse its buffer
        np.subtract(w.corrected, mine, out=residual, casting="unsafe")
    else:
        w.feedback.residuals[w.key] = w.corrected - mine.astype(w.corrected.dtype, copy=False)


register("compressed_allreduce", "powersgd")(LowRankPath())
