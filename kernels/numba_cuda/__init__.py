"""Numba-CUDA provider: ``@cuda.jit`` versions of the reference operations.

Same signatures and bitwise-identical results as :mod:`.reference`; outputs mirror the input's
array type (CuPy in, CuPy out; NumPy in, NumPy out, as under the CUDA simulator). Values are
handled through their IEEE bit patterns wherever bits make the contract exact (ordering by
``|x|``, 16-bit floats, NaN payloads); Numba has no general float16 arithmetic on CUDA.

One module per family of operations, as in ``kernels/cuda/``: ``randoms`` (counter hash),
``selection`` (top-k, threshold, nonzero), ``quantization`` (block codes and signs), ``halves``
(fp16, bf16), ``sparse`` (scatter-add, CSR), ``lowrank`` (PowerSGD); ``common`` holds launches,
device helpers and constants. Each operation is declared in :mod:`..ops`, whose checks run before
the code here; array types and ``out=`` handling come from :mod:`mpicoll.backend` and
:mod:`..arrays`, shared with the other providers.

FMA contraction: NVVM contracts ``a * b + c`` into one fused multiply-add by default (its ``-fma``
option defaults to 1), and numba-cuda 0.30 passes ``-fma=1`` with ``fastmath=True`` but nothing
with ``fastmath=False``, so contraction is on in every ``@cuda.jit`` kernel (numba-cuda issue #118;
``@cuda.jit`` has no ``fma=`` option). Compiling ``v = a * b`` then ``v + c`` in two statements
still gives ``fma.rn.f32``: separate variables do not help. The products that the reference rounds
before an add therefore go through libdevice's ``__nv_fmul_rn`` / ``__nv_dmul_rn``, which emit
``mul.rn``; an explicit rounding modifier is never fused, by NVVM or ptxas (checked in the PTX).
Default math is otherwise IEEE: no flush to zero, correctly rounded division and square root.

NaN results: a GPU returns one canonical NaN from any arithmetic that makes a NaN, while NumPy on
x86-64 propagates a NaN operand's payload (quieted) and makes the negative "default NaN" for
invalid operations (``inf - inf``, ``0 * inf``). Where an output can hold an arithmetic NaN (scales,
dequantize, sign_unpack, scatter_add) the kernels write the x86 bits explicitly.

Under the simulator (``NUMBA_ENABLE_CUDASIM=1``) every CUDA thread is a Python thread: the grid is
capped at two blocks there (grid-stride loops cover any size), and libdevice calls are replaced by
NumPy scalar operations, which never fuse.
"""


from __future__ import annotations

from .. import threads as _threads  # noqa: F401 - Numba's thread settings must precede its first import

# isort: split
from ..ops import collect
from . import halves, lowrank, quantization, randoms, selection, sparse

OPS = collect("numba-cuda", [randoms, selection, quantization, halves, sparse, lowrank])
