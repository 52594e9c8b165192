"""Gradient compressors: ``mpicoll.compression.get(name, **params)``.

Every compressor follows one protocol (see :mod:`.base`): ``compress(x, key) -> (payload, ctx)``
and ``decompress(payload, ctx) -> array``; the payload is one contiguous byte buffer with a
validated header (:mod:`.payload`). ``ErrorFeedback(inner)`` adds error feedback to any of them.

==============  =========  ==============================================================
name            kind       what crosses the wire
==============  =========  ==============================================================
none            summable   the array
fp16, bf16      summable   16-bit floats
randomk         summable   k values (indices derived from seed, step, key on every rank)
topk            sparse     exactly k (index, value) pairs, largest magnitudes
topk_approx     sparse     about k pairs above a sampled threshold, one pass
threshold       sparse     pairs with |x| >= tau
coo, csr        sparse     all nonzeros (lossless), 1-D / 2-D
int8, int4      quantized  8- / 4-bit codes, one scale per block
qsgd            quantized  unbiased stochastic codes of the block's L2 norm
sign            quantized  1 bit per element, one scale per block
powersgd        lowrank    two thin float32 matrices P (n x r), Q (m x r) of the n x m view
==============  =========  ==============================================================
"""

from . import coo, csr, halfprec, none, powersgd, qsgd, randomk, sign, threshold, topk, topk_approx, uniform  # noqa: F401
from .base import Compressor, Ctx
from .error_feedback import ErrorFeedback
from .registry import get, names

__all__ = ["Compressor", "Ctx", "ErrorFeedback", "get", "names"]
