"""``powersgd``: a rank-``r`` approximation by one step of power iteration (Vogels et al., 2019).

The array is viewed as a matrix ``M`` (``n x m``): its first dimension by the rest, or, for a
1-D array (a flat gradient bucket), laid out near-square with zero padding. Then::

    P = M Q_prev          (n x r)
    P^ = orthonormal(P)   (Gram-Schmidt)
    Q = M^T P^            (m x r)
    M ~ P^ Q^T

``Q_prev`` is the previous step's ``Q`` of the same key (*warm start*: one power-iteration step
per training step converges to the gradient's dominant subspace over the steps); the first one
is a random matrix every rank derives from ``(seed, key)``.

Used through the protocol (``compress`` / ``decompress``) it is a local compressor whose payload
holds ``P^`` and ``Q``: ``(n + m) r`` float32 values instead of ``n m``. Across ranks its
linearity makes the all-reduce cheap (path ``powersgd`` in :mod:`mpicoll.aggregation.lowrank`):
sum ``P`` over ranks, orthonormalize it on every rank, ``Q_w = M_w^T P^``, sum ``Q``; the result
``P^ (sum Q_w)^T = P^ P^^T sum M_w`` is the exact sum projected onto ``P^``'s columns. The
products with ``M`` are thin matrix products (BLAS, memory-bound); use it with
:class:`~mpicoll.compression.ErrorFeedback`: without it, what lies outside the subspace is lost.

Everything a rank computes from shared data gives the same bits on every rank: the
orthonormalization uses NumPy's own summation rather than BLAS (the same NumPy build is
assumed), and the reconstruction is the kernel ``lowrank_reconstruct`` (rounded products added
in order; NumPy reference, Numba CPU, Numba CUDA and CuPy providers), the hot loop here.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np

from .. import kernels
from ..backend import device_of, xp_of
from ..errors import ArgumentError, PayloadError
from ..kernels.hashing import stream_base, uniform24
from ..kernels.threads import blas_share
from .base import Compressor, Ctx, check_range
from .payload import Header, expect
from .registry import register

_SALT = 0x504F57455253  # "POWERS": the warm-start stream never reuses another compressor's
WIRE = np.dtype(np.float32)


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The ``(n, m)`` matrix an array of ``shape`` is viewed as (``n * m`` may exceed the size: padding)."""
    size = math.prod(shape)
    if len(shape) >= 2 and shape[0] > 1 and size // shape[0] > 1:
        return shape[0], size // shape[0]
    n = max(1, math.isqrt(max(size - 1, 0)) + 1) if size > 1 else 1  # ceil(sqrt(size))
    return n, max(1, -(-size // n))


def as_matrix(flat: Any, n: int, m: int) -> Any:
    """``flat`` as an ``n x m`` float32 matrix (a view where possible, zero-padded otherwise)."""
    xp = xp_of(flat)
    if flat.size == n * m:
        return flat.astype(WIRE, copy=False).reshape(n, m)
    padded = xp.zeros(n * m, dtype=WIRE)
    padded[:flat.size] = flat
    return padded.reshape(n, m)


def orthonormalize(p: Any) -> Any:
    """Modified Gram-Schmidt on the columns of ``p`` (in place, float64 sums); a column that has
    (numerically) nothing left becomes zero instead of noise."""
    xp = xp_of(p)
    for j in range(p.shape[1]):
        col = p[:, j].astype(np.float64)
        for i in range(j):
            prev = p[:, i].astype(np.float64)
            col -= xp.sum(col * prev) * prev
        norm = float(xp.sqrt(xp.sum(col * col)))
        scale = float(xp.sqrt(xp.sum(p[:, j].astype(np.float64) ** 2)))
        p[:, j] = col / norm if norm > 1e-6 * max(scale, 1e-30) else 0.0
    return p


def reconstruct(p: Any, q: Any, size: int, out: Any = None) -> Any:
    """``(p @ q.T).ravel()[:size]`` as float32, the same bits on every machine and provider (the
    kernel ``lowrank_reconstruct``: rounded products added in order, unlike a BLAS product);
    ``out``: a flat float32 array of ``size`` to write into."""
    return kernels.get("lowrank_reconstruct", device_of(p))(p, q, size, out=out)


@register
class PowerSGD(Compressor):
    """Low-rank compression by power iteration with warm start; see the module docstring."""

    name = "powersgd"
    wire_id = 14
    kind = "lowrank"

    def __init__(self, rank: int = 4, warm_start: bool = True, seed: int = 0) -> None:
        super().__init__()
        self.rank = int(check_range(self.name, "rank", rank, 1, 1024, integer=True))
        self.warm_start = bool(warm_start)
        self.seed = int(check_range(self.name, "seed", seed, 0, (1 << 63) - 1, integer=True))
        self.q: dict[Hashable, Any] = {}

    def params(self) -> dict[str, Any]:
        return {"rank": self.rank, "warm_start": self.warm_start, "seed": self.seed}

    # ------------------------------------------------------------------ the steps (shared with the path)
    def layout(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(n, m, r)`` for an array of ``shape``: its matrix and the rank actually used."""
        n, m = matrix_shape(shape)
        return n, m, min(self.rank, n, m)

    def start_q(self, key: Hashable, m: int, r: int, step: int, xp: Any = np) -> Any:
        """The ``Q`` that multiplies this step's matrix: the warm one, or a fresh random one (first
        step, ``warm_start=False``, or a shape change) derived from ``(seed, key)`` on every rank."""
        q = self.q.get(key) if self.warm_start else None
        if q is not None and tuple(q.shape) == (m, r):
            return xp.asarray(q)
        return xp.asarray(self._random(key, m, r, 0 if self.warm_start else step))

    def remember(self, key: Hashable, q: Any, step: int) -> None:
        """Keep ``q`` as the next warm start; columns that collapsed to zero are drawn afresh, or
        they would stay zero (and that part of the rank lost) forever."""
        if not self.warm_start:
            return
        xp = xp_of(q)
        q = q.copy()
        dead = xp.flatnonzero(xp.all(q == 0, axis=0))
        if dead.size:
            fresh = xp.asarray(self._random(key, q.shape[0], q.shape[1], step + 1))
            q[:, dead] = fresh[:, dead]
        self.q[key] = q

    def _random(self, key: Hashable, m: int, r: int, step: int) -> np.ndarray:
        base = stream_base(self.seed, step, key, _SALT)
        return (uniform24(base, 0, m * r) - np.float32(0.5)).reshape(m, r)

    # ------------------------------------------------------------------ the protocol (one rank)
    def payload_nbytes(self, x: Any) -> int | None:
        n, m, r = self.layout(tuple(x.shape))
        return self._size([(WIRE, n * r), (WIRE, m * r)])

    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        xp = xp_of(flat)
        n, m, r = self.layout(ctx.shape)
        matrix = as_matrix(flat, n, m)
        payload, (p_flat, q_flat) = self._allocate(ctx, [(WIRE, n * r), (WIRE, m * r)], xp, aux0=r, aux1=n, out=out)
        p, q = p_flat.reshape(n, r), q_flat.reshape(m, r)
        with blas_share():
            xp.matmul(matrix, self.start_q(ctx.key, m, r, ctx.step, xp), out=p)
            orthonormalize(p)
            xp.matmul(matrix.T, p, out=q)
        self.remember(ctx.key, q, ctx.step)
        return payload

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        n, m, r = self.layout(ctx.shape)
        expect(header, self.name, flags=0)
        if (header.aux0, header.aux1) != (r, n):
            raise PayloadError(f"{self.name}: payload is rank {header.aux0} with {header.aux1} rows, this tensor "
                               f"needs rank {r} with {n} rows; ranks must use the same rank and tensor shape")
        p_flat, q_flat = self._sections(payload, header, [(WIRE, n * r), (WIRE, m * r)])
        direct = out if out is not None and ctx.dtype == WIRE else None
        values = reconstruct(p_flat.reshape(n, r), q_flat.reshape(m, r), ctx.numel, direct)
        return values.astype(ctx.dtype, copy=False)

    def snapshot(self) -> Any:
        return super().snapshot(), dict(self.q)

    def restore(self, snapshot: Any) -> None:
        steps, self.q = snapshot
        super().restore(steps)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Step counters and the warm-start ``Q`` of every key (host arrays)."""
        from ..backend import to_host

        return {**super().state_dict(), "q": {k: np.array(to_host(v)) for k, v in self.q.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        super().load_state_dict(state)
        q = state.get("q", {})
        if not isinstance(q, dict):
            raise ArgumentError(f"{self.name}: state 'q' must map keys to arrays, got {type(q).__name__}")
        self.q = {k: np.asarray(v, dtype=WIRE) for k, v in q.items()}
