"""Numba CPU provider: ``@njit(parallel=True)`` versions of the reference operations.

Same signatures and bitwise-identical results as :mod:`..reference` (the parity tests check).
Floating values are handled through their IEEE bit patterns wherever Numba lacks an operation
(it has no float16 arithmetic) or where bits make the contract exact (ordering by ``|x|``).

One module per family of operations, as in ``kernels/cuda/``: ``randoms`` (counter hash),
``selection`` (top-k, threshold, nonzero), ``quantization`` (block codes and signs), ``halves``
(fp16, bf16), ``sparse`` (scatter-add, CSR), ``lowrank`` (PowerSGD); ``common`` holds what they
share. Each operation is declared in :mod:`..ops`, whose checks run before the code here.
"""

from __future__ import annotations

from .. import threads as _threads  # noqa: F401 - sets Numba's thread count and OpenMP wait policy first

# isort: split
from ..ops import collect
from . import halves, lowrank, quantization, randoms, selection, sparse

OPS = collect("numba-cpu", [randoms, selection, quantization, halves, sparse, lowrank])
