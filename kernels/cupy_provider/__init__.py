"""CuPy provider: the reference operations as CUDA C kernels, on CuPy arrays.

Same signatures and bitwise identical results as :mod:`.reference` (the parity tests in
``tests/gpu`` check); inputs and outputs are CuPy arrays, scalars are host values. The kernels
are CUDA C in ``cuda/*.cu`` (package data), one file per family: ``hash`` (counter-hash
randoms), ``select`` (radix selection, order-preserving compaction), ``quantize`` (block scales,
quantize + pack, signs), ``halves`` (fp16, bf16, NumPy-exact casts to float32), ``sparse``
(scatter-add, CSR) and ``lowrank`` (PowerSGD's reconstruction). Each family is compiled by NVRTC
at its first use, with ``cuda/common.cu`` (shared device helpers) in front of it; nothing is
allocated or compiled at import.

How parity is kept: integer work is exact; float arithmetic uses explicitly rounded intrinsics,
compiled without FMA contraction; the float64 sums that feed a scale make the additions of
``reference.ordered_sum`` in its order (lanes, then chunks); and NaN results are rebuilt with
the bits the reference's x86-64 host produces (a GPU would return one canonical NaN).
Selections are sorted by construction: chunks are compacted in index order, never sorted.

Host synchronizations: only where an output size depends on the data (``threshold``,
``nonzero``, ``csr_build``: one count each), and to fill a host (NumPy) ``out=`` buffer; each
is marked ``# synchronize!``.
"""

from __future__ import annotations

from ..ops import collect
from . import halves, lowrank, quantization, randoms, selection, sparse

OPS = collect("cupy", [randoms, selection, quantization, halves, sparse, lowrank])
