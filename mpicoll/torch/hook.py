"""A DDP communication hook on mpicoll: ``ddp.register_comm_hook(HookState(...), allreduce_hook)``.

torch's contract: the hook gets a ``GradBucket`` (one flat gradient buffer per bucket) and returns
a ``Future`` whose value is the bucket's averaged gradient. Here the bucket goes to mpicoll's
non-blocking (compressed) all-reduce on a NumPy/CuPy view of the buffer, and the engine thread
completes the future, so DDP keeps computing gradients while buckets travel.

DDP rebuilds its buckets once, after the first iteration (in the order gradients became ready).
Error-feedback residuals are kept per bucket, so compression starts only at iteration
``start_iter`` (default 2), as PyTorch's PowerSGD hook does: before that, buckets are averaged
uncompressed and no residual can belong to a bucket layout that is about to change.

No momentum correction here: a hook sees gradient buckets, not the optimizer, so it cannot keep
the momentum (or weight decay, learning rate) that DGC-style correction must apply before
compressing; error feedback stays on the gradient. For compressed momentum SGD use
:class:`~mpicoll.torch.DistributedOptimizer` (``momentum_correction="auto"``) or
:class:`~mpicoll.torch.DGC`.
"""

# No `from __future__ import annotations` here: DDP checks the hook's annotations as objects.
import math
import threading
from typing import Any

import torch
import torch.distributed as dist

from .. import timeline
from ..aggregation import compressed_iallreduce
from ..aggregation.autocodec import AutoCodec, resolve_compressor
from ..collectives import Handle, iallreduce
from ..compression import Compressor
from ..errors import ArgumentError
from ..transport import as_comm
from .tensors import as_array, as_tensor


class HookState:
    """What :func:`allreduce_hook` needs: compressor, communicator, iteration count.

    Args:
        compressor: ``None`` for a plain average, any mpicoll compressor (wrap it in
            :class:`~mpicoll.compression.ErrorFeedback` for error feedback), or ``"auto"`` / an
            :class:`~mpicoll.aggregation.AutoCodec`: per DDP bucket, the codec the cost model
            predicts fastest, or none (decided at the bucket's first compressed iteration).
        comm: the communicator (default: a private duplicate of ``COMM_WORLD``).
        algorithm: the all-reduce algorithm (``"auto"``).
        start_iter: the first iteration that compresses (at least 2, see the module docstring).
        warmup_steps: a dense warm-up: iterations averaged uncompressed before compression starts
            (at iteration ``max(start_iter, warmup_steps)``, with empty residuals).
    """

    def __init__(self, compressor: Compressor | AutoCodec | str | None = None, *, comm: Any = None,
                 algorithm: str = "auto", start_iter: int = 2, warmup_steps: int = 0) -> None:
        if compressor is not None and compressor != "auto" and not isinstance(compressor, (Compressor, AutoCodec)):
            raise ArgumentError(f"HookState: compressor must be an mpicoll compressor, 'auto' or None, "
                                f"got {compressor!r}")
        compressor = resolve_compressor(compressor)
        if start_iter < 2 and compressor is not None:
            raise ArgumentError(f"HookState: start_iter={start_iter}; it must be at least 2, because DDP "
                                f"rebuilds its buckets after the first iteration")
        self.compressor, self.comm, self.algorithm, self.start_iter = compressor, comm, algorithm, start_iter
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ArgumentError(f"HookState: warmup_steps={warmup_steps!r}; accepted: an integer >= 0")
        self.warmup_steps = warmup_steps
        self.iteration = 0

    @property
    def compress_from(self) -> int:
        """The first iteration that compresses."""
        return max(self.start_iter, self.warmup_steps)

    def state_dict(self) -> dict[str, Any]:
        """The iteration count, the world size and the compressor's state (error-feedback residuals)."""
        return {"iteration": self.iteration, "world_size": as_comm(self.comm).size,
                "compressor": None if self.compressor is None else self.compressor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; refuses one taken at another world size (residuals are per rank)."""
        saved, size = state.get("world_size", as_comm(self.comm).size), as_comm(self.comm).size
        if saved != size:
            raise ArgumentError(f"HookState.load_state_dict: the checkpoint was taken on {saved} ranks, this job has "
                                f"{size}; residuals are per rank and cannot be redistributed")
        self.iteration = int(state["iteration"])
        if self.compressor is not None and state.get("compressor") is not None:
            self.compressor.load_state_dict(state["compressor"])


def _complete(future: torch.futures.Future, handle: Handle, buffer: torch.Tensor, array: Any) -> None:
    """Runs on the engine's thread: hand the result (or the error) to DDP through the future."""
    try:
        result = handle.wait()
        if result is not array:  # the compressed path returns a new array
            buffer.copy_(as_tensor(result, buffer).view_as(buffer))
        future.set_result(buffer)
    except BaseException as exc:  # handed to whoever waits on the future
        future.set_exception(exc)


def allreduce_hook(state: "HookState | None", bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Average ``bucket``'s gradients over all ranks with mpicoll (DDP communication hook).

    Register with ``ddp_model.register_comm_hook(HookState(compressor), allreduce_hook)``
    (``None`` as the state: a plain average with default settings).
    """
    state = state if state is not None else HookState()
    buffer = bucket.buffer()
    array = as_array(buffer)
    launched, step, index = timeline.now_ns(), state.iteration, bucket.index()
    timeline.instant(f"bucket {index} ready", "bucket", bucket=index, step=step)
    compressor = state.compressor
    if isinstance(compressor, AutoCodec) and state.iteration >= state.compress_from:
        comm = as_comm(state.comm)
        if index == 0:  # DDP hands buckets over in index order: nothing of this iteration is in flight yet
            compressor.prepare(comm)
        compressor = compressor.resolve(comm, ("ddp", index), int(array.nbytes))
    if compressor is None or state.iteration < state.compress_from:
        handle = iallreduce(array, "avg", algorithm=state.algorithm, comm=state.comm, out=array)
    else:
        parts = [tuple(g.shape) for g in bucket.gradients()]  # PowerSGD: one matrix per parameter
        if sum(math.prod(shape) for shape in parts) != array.size:
            parts = None
        handle = compressed_iallreduce(array, compressor, key=("ddp", index), comm=state.comm,
                                       average=True, algorithm=state.algorithm, parts=parts)
    if bucket.is_last():
        state.iteration += 1
    # devices=: torch then tracks CUDA streams for the result (the engine synchronized the device)
    future: torch.futures.Future[torch.Tensor] = torch.futures.Future(
        devices=[buffer.device] if buffer.is_cuda else None)
    if timeline.recording():  # DDP hands a bucket over as soon as it is ready: launch = ready
        tid = threading.get_native_id()
        handle.add_done_callback(lambda h: timeline.complete(
            f"bucket {index}", "bucket", launched, timeline.now_ns(), tid=tid, bucket=index, step=step,
            bytes=int(buffer.nbytes), ddp=True))
    handle.add_done_callback(lambda h: _complete(future, h, buffer, array))
    return future
