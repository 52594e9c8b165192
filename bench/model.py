"""The alpha-beta-gamma cost model of the all-reduce algorithms, fitted to measurements.

A call of ``n`` bytes costs ``alpha * L + beta * B * n + gamma * G * n``: ``L`` message rounds
of latency ``alpha``, ``B * n`` bytes through a link of ``1/beta`` bytes per second, ``G * n``
bytes reduced at ``1/gamma`` bytes per second (Thakur, Rabenseifner & Gropp, 2005). ``tune``
fits ``alpha``, ``beta`` and ``gamma`` to every algorithm's measured times at once and reports
each measurement's efficiency: the model's time over the measured one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _pof2(p: int) -> tuple[int, bool]:
    k = 1 << (p.bit_length() - 1)
    return k, k == p


def coefficients(algorithm: str, p: int) -> tuple[float, float, float] | None:
    """``(L, B, G)`` of an all-reduce algorithm on ``p`` ranks (``None``: not modelled, e.g. native)."""
    if p == 1:
        return 0.0, 0.0, 0.0
    k, exact = _pof2(p)
    fold = (0.0, 0.0, 0.0) if exact else (2.0, 2.0, 1.0)  # extra ranks send n in, get n back
    rounds = math.log2(k)
    table = {
        "ring": (2 * (p - 1), 2 * (p - 1) / p, (p - 1) / p),
        "recursive_doubling": (rounds, rounds, rounds),
        "rabenseifner": (2 * rounds, 2 * (k - 1) / k, (k - 1) / k),
        # heap-ordered binary tree of height h: up and down once; a node with c children moves 2c * n
        "tree": (2 * (math.ceil(math.log2(p + 1)) - 1), 2.0 * min(2, p - 1), float(min(2, p - 1))),
    }
    if algorithm not in table:
        return None
    base = table[algorithm]
    if algorithm in ("recursive_doubling", "rabenseifner"):
        return tuple(b + f for b, f in zip(base, fold, strict=True))
    return base


@dataclass
class Fit:
    """Fitted costs: alpha in seconds, beta and gamma in seconds per byte."""

    alpha: float
    beta: float
    gamma: float

    def predict(self, algorithm: str, p: int, nbytes: int) -> float | None:
        c = coefficients(algorithm, p)
        if c is None:
            return None
        return self.alpha * c[0] + self.beta * c[1] * nbytes + self.gamma * c[2] * nbytes

    def describe(self) -> str:
        def rate(x: float) -> str:
            return f"{1 / x / 1e9:.2f} GB/s" if x > 0 else "unbounded"

        return f"alpha {self.alpha * 1e6:.1f} us, link {rate(self.beta)}, reduction {rate(self.gamma)}"


def fit(points: Sequence[tuple[str, int, int, float]]) -> Fit | None:
    """Least-squares fit, relative to each time, of ``(algorithm, p, nbytes, seconds)`` points.

    Non-negative: the best fit over every subset of the three parameters whose solution is
    non-negative (three parameters, so trying all subsets is the simplest exact NNLS).
    """
    rows, target = [], []
    for algorithm, p, nbytes, seconds in points:
        c = coefficients(algorithm, p)
        if c is None or seconds <= 0:
            continue
        rows.append([c[0] / seconds, c[1] * nbytes / seconds, c[2] * nbytes / seconds])
        target.append(1.0)
    if len(rows) < 3:
        return None
    a, b = np.array(rows), np.array(target)
    best, best_err = None, math.inf
    for keep in itertools.chain.from_iterable(itertools.combinations(range(3), r) for r in (1, 2, 3)):
        sol, *_ = np.linalg.lstsq(a[:, keep], b, rcond=None)
        if (sol < 0).any():
            continue
        full = np.zeros(3)
        full[list(keep)] = sol
        err = float(np.sum((a @ full - b) ** 2))
        if err < best_err:
            best, best_err = full, err
    return None if best is None else Fit(*map(float, best))
