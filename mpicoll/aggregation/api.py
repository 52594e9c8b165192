"""``compressed_allreduce``: an all-reduce whose messages are compressed.

The path follows the compressor's traits (its ``kind``, see :mod:`mpicoll.compression.base`);
which paths each kind may take and what ``auto`` picks is written in :mod:`.choice`. The call
agrees on its arguments across ranks once; the paths then run the collectives' unvalidated
internal entry points (:mod:`mpicoll.collectives.internal`), and a final exchange agrees on
whether any step failed anywhere.
"""

from __future__ import annotations

import contextlib
import math
import operator
import warnings
from collections.abc import Hashable
from typing import Any

from .. import timeline
from ..backend import to_host, xp_of
from ..collectives import Handle
from ..collectives.internal import Agreement, check_array, check_finite, get_algorithm, start
from ..compression import Compressor
from ..errors import ArgumentError, DtypeError, PayloadError, PeerError
from ..transport import Comm, as_comm
from ..transport.entry import watched
from ..transport.watchdog import refine, waiting_on
from . import allgather_decode, hierarchical, lowrank, sparse, summable, two_phase  # noqa: F401  (registration)
from .choice import resolve, runs_on_host
from .path import Parts

__all__ = ["compressed_allreduce", "compressed_iallreduce"]


def _shapes(parts: Parts, size: int) -> list[tuple[int, ...]] | None:
    """``parts`` as a list of int tuples, checked: dimensions are integers >= 0 and the shapes hold
    exactly ``size`` elements."""
    if parts is None:
        return None
    try:
        shapes = [tuple(operator.index(d) for d in shape) for shape in parts]
    except TypeError:
        raise ArgumentError(f"compressed_allreduce: parts must be a sequence of shapes (tuples of integers), "
                            f"got {parts!r}") from None
    if any(d < 0 for shape in shapes for d in shape):
        raise ArgumentError(f"compressed_allreduce: parts {shapes} has a negative dimension")
    total = sum(math.prod(shape) for shape in shapes)
    if total != size:
        raise ArgumentError(f"compressed_allreduce: parts {shapes} hold {total} elements, the array has {size}; "
                            f"pass the shapes of the tensors packed in it, in order")
    return shapes


_warned_host_paths: set[str] = set()


def _to_host_path(x: Any, name: str) -> Any:
    """A host copy of GPU array ``x`` for path ``name``, which runs in host memory (warned once per path)."""
    if name not in _warned_host_paths:
        _warned_host_paths.add(name)
        warnings.warn(f"compressed_allreduce: the {name!r} path runs in host memory: GPU arrays are copied to "
                      f"the host and the result back, and the codec runs on the CPU (only the dense algorithms, "
                      f"with fp16, bf16, randomk or none, keep GPU arrays on the GPU)", stacklevel=4)
    return to_host(x)


def _agree_on_errors(comm: Comm, errors: list[tuple[str, str]]) -> None:
    """Raise the same error on every rank if any step failed on any rank: :class:`PayloadError` when
    all failures were malformed payloads, :class:`PeerError` naming the ranks otherwise."""
    waiting_on(None, "the check for failed steps")
    reports = comm.mpi.allgather(errors or None)
    bad = {rank: found for rank, found in enumerate(reports) if found}
    if not bad:
        return
    listing = " | ".join(f"rank {rank} found: {'; '.join(text for _, text in found)}" for rank, found in bad.items())
    if all(kind == "PayloadError" for found in bad.values() for kind, _ in found):
        raise PayloadError(f"compressed_allreduce: malformed payloads, result discarded on every rank. {listing}. "
                           f"Check that every rank runs the same mpicoll version and compressor.")
    raise PeerError(f"compressed_allreduce: a step failed mid-protocol; every rank completed the protocol, "
                    f"discarded the result and restored its compressor. {listing}", rank=min(bad))


@watched("compressed_allreduce")
def compressed_allreduce(x: Any, compressor: Compressor, *, key: Hashable = None, comm: Any = None,
                         average: bool = True, algorithm: str = "auto", parts: Parts = None) -> Any:
    """All-reduce ``x`` with compressed messages; returns an array like ``x`` (a new one).

    Args:
        x: this rank's contribution (NumPy or CuPy array, float16/32/64, any shape). A CuPy array
            stays on the GPU on the flat dense algorithms (summable compressors on one host); on
            the other paths (sparse, quantized, low-rank, and ``hierarchical``, which ``auto``
            takes across hosts) it is copied to host memory, compressed there, and the result
            copied back to its GPU (a warning says so once per path).
        compressor: from :func:`mpicoll.compression.get`, optionally wrapped in
            :class:`~mpicoll.compression.ErrorFeedback` (then nothing the compression drops is
            lost across steps; with ``two_phase`` the chunk owners keep their own residuals too).
        key: names the tensor (random choices and residuals are kept per key); use one key per
            tensor and call in the same order on every rank.
        comm: an :class:`mpicoll.Comm`, an mpi4py communicator, or ``None`` for the default.
        average: divide the sum by the number of ranks (the gradient mean). float16 is divided in
            float32, before its single rounding (fp16 on the wire: each contribution is first
            divided by the largest power of two <= p, exactly, so partial sums stay in range).
        algorithm: ``"auto"`` or a path the compressor's kind allows (the table of :mod:`.choice`).
        parts: when ``x`` packs several tensors one after another (a gradient bucket), their
            shapes in order. PowerSGD then compresses each as its own matrix (and sends the ones
            low rank would not shrink, such as biases, exactly); the other paths ignore it.

    Returns:
        The (approximate) sum or mean, bitwise identical on every rank. With ``none`` it equals
        :func:`mpicoll.allreduce` (sum, or sum / p), float16 included.

    Raises:
        UnsupportedError: an algorithm that cannot carry this compressor's payloads.
        MismatchError / PeerError: ranks disagree on the arguments, the tensor's shape where the
            path depends on it, or random-k's stream (validation on).
        PayloadError / PeerError: a malformed payload, or a step that failed on some rank: raised
            on every rank after the protocol completed.

    A call that raises leaves the compressor (step counters, residuals, warm starts) as it was, on
    every rank.
    """
    c = as_comm(comm)
    snapshot = compressor.snapshot() if isinstance(compressor, Compressor) else None
    try:
        with Agreement(c, "compressed_allreduce", carry=True) as agree:  # carries a payload size
            if not isinstance(compressor, Compressor):
                raise ArgumentError(f"compressed_allreduce: compressor must come from mpicoll.compression.get, got "
                                    f"{type(compressor).__name__}")
            x = check_array(x, "compressed_allreduce")
            if x.dtype.kind != "f":
                raise DtypeError(f"compressed_allreduce: needs a floating array, got {x.dtype}")
            check_finite(x, c.rank, "compressed_allreduce")
            parts = _shapes(parts, x.size)
            name = resolve(compressor, algorithm, x, c, parts)
            device_x = x
            if runs_on_host(name, x):
                x = _to_host_path(x, name)
            refine(name)
            path = get_algorithm("compressed_allreduce", name)
            shapes = [tuple(x.shape)] if parts is None and path.uses_shape else parts
            agree.set(count=x.size, dtype=x.dtype, algorithm=name, compressor=repr(compressor), parts=shapes)
            compressor.bind(key, tuple(x.shape), c.size)
            with timeline.span("compress", path=name):
                prepared = path.prepare(c, x, compressor, key, parts, average)  # local: failures reach every rank
            agree.set(stream=prepared.stream)
            agree.carry(prepared.announce)
        prepared.announced = agree.carried
        with timeline.span("exchange", path=name):
            result = path.run(c, prepared)
        _agree_on_errors(c, prepared.errors)
        if prepared.commit is not None:
            prepared.commit()
    except BaseException:
        if snapshot is not None:  # refused or failed: nothing changes, on any rank
            compressor.restore(snapshot)
        raise
    result = result.astype(x.dtype, copy=False)
    if device_x is x:
        return result
    with getattr(device_x, "device", contextlib.nullcontext()):  # back on the input's GPU, not the current one
        return xp_of(device_x).asarray(result)


def compressed_iallreduce(x: Any, compressor: Compressor, *, key: Hashable = None, comm: Any = None,
                          average: bool = True, algorithm: str = "auto", parts: Parts = None) -> Handle:
    """Non-blocking :func:`compressed_allreduce` (see :mod:`mpicoll.collectives.nonblocking`).

    The compressor is used from the engine's thread: do not use the same compressor object from
    another thread until ``wait()`` returns.
    """
    return start(comm, "compressed_iallreduce",
                 lambda c: compressed_allreduce(x, compressor, key=key, comm=c, average=average, algorithm=algorithm,
                                                parts=parts),
                 x)
