"""Gradient buckets: many small arrays fused into a few buffers, each reduced as soon as it fills.

Like DDP's ``bucket_cap_mb`` and Horovod's fusion buffer: the arrays are grouped, in *reverse*
registration order (gradients become ready from the last layer back), into buckets of at most
``bucket_bytes`` and a single dtype (one bucket per dtype fills at a time).
:meth:`GradientBuckets.ready` marks an array; when every array of a bucket is marked, the bucket
is copied into its fusion buffer and its (compressed) all-reduce starts in the background.
Buckets start strictly in order (0, 1, 2, ...), so every rank starts the same collectives in the
same order even when arrays become ready in a different order. :meth:`GradientBuckets.wait`
finishes them all and writes the results back into the arrays. The buckets never change, so
error-feedback keys (one per bucket) stay valid.

Dense warm-up: with ``warmup_steps=N`` the first ``N`` steps (calls of :meth:`~GradientBuckets.wait`)
are plain all-reduces; compression starts at step ``N`` with empty residuals (nothing was
compressed before), as PyTorch's PowerSGD hook does with ``start_powerSGD_iter``.

``algorithm="shm"`` (one host): the fusion buffers are allocated in MPI-3 shared memory
(:func:`mpicoll.shared_empty`), so the all-reduces read each other's buckets in place: no copy
into a staging buffer, none out of it (see :mod:`mpicoll.collectives.shm`).

``compressor="auto"`` (or an :class:`~.autocodec.AutoCodec`): each bucket gets the codec the cost
model predicts fastest for its size, or none, decided at its first compressed step and the same
on every rank (see :mod:`.autocodec`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import timeline
from ..backend import xp_of
from ..collectives import Handle, algorithm_names, iallreduce
from ..compression import Compressor
from ..errors import ArgumentError
from ..transport import as_comm
from ..transport.shared import shared_empty
from .api import compressed_iallreduce
from .autocodec import AutoCodec, resolve_compressor


@dataclass
class Bucket:
    """Arrays fused into one buffer."""

    index: int
    names: list[Hashable]
    buffer: Any
    offsets: list[int]
    pending: set[Hashable] = field(default_factory=set)
    handle: Handle | None = None


class GradientBuckets:
    """Fuse, launch and unpack the all-reduces of many arrays (see the module docstring).

    Args:
        arrays: ``(name, array)`` pairs in registration (forward) order, or a dict; the arrays
            are reduced in place (``average=True``: their mean over ranks).
        bucket_bytes: the fusion buffer size (an array larger than this gets a bucket alone).
        compressor: ``None`` for a plain all-reduce, a compressor (error feedback is keyed by
            ``key_prefix`` and the bucket index), or ``"auto"`` / an
            :class:`~mpicoll.aggregation.autocodec.AutoCodec` (a codec per bucket from the cost model).
        comm, algorithm, average: as for :func:`mpicoll.allreduce` / :func:`compressed_allreduce`.
        warmup_steps: steps reduced uncompressed before the compressor is used (see the module
            docstring); :attr:`steps` counts completed steps.
    """

    def __init__(self, arrays: Iterable[tuple[Hashable, Any]] | dict[Hashable, Any], *,
                 bucket_bytes: int = 25 << 20, compressor: Compressor | AutoCodec | str | None = None,
                 comm: Any = None,
                 algorithm: str = "auto", average: bool = True, key_prefix: str = "bucket",
                 warmup_steps: int = 0) -> None:
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ArgumentError(f"GradientBuckets: warmup_steps={warmup_steps!r}; accepted: an integer >= 0")
        self.warmup_steps, self.steps = warmup_steps, 0
        items = list(arrays.items() if isinstance(arrays, dict) else arrays)
        if len({name for name, _ in items}) != len(items):
            raise ArgumentError("GradientBuckets: array names must be unique")
        self.arrays = dict(items)
        self.compressor = resolve_compressor(compressor)
        self.comm, self.algorithm, self.average = comm, algorithm, average
        self.key_prefix = key_prefix
        self.buckets = self._plan(items[::-1], bucket_bytes)
        self.bucket_of = {name: b for b in self.buckets for name in b.names}
        self._next = 0
        #: completed steps (calls of :meth:`wait`)
        self.step = 0
        self._reset()

    def _plan(self, items: list[tuple[Hashable, Any]], bucket_bytes: int) -> list[Bucket]:
        groups: list[list[tuple[Hashable, Any]]] = []
        open_groups: dict[Any, tuple[list[tuple[Hashable, Any]], list[int]]] = {}  # one filling bucket per dtype
        for name, array in items:
            kind = (array.dtype, type(array))
            group, size = open_groups.get(kind, (None, [0]))
            if group is None or size[0] + array.nbytes > bucket_bytes:
                group, size = [], [0]
                groups.append(group)
                open_groups[kind] = (group, size)
            group.append((name, array))
            size[0] += array.nbytes
        buckets = []
        for index, group in enumerate(groups):
            offsets = np.cumsum([0] + [a.size for _, a in group]).tolist()
            xp = xp_of(group[0][1])
            dtype = group[0][1].dtype
            if self.algorithm == "shm" and xp is np:  # zero copy: the fusion buffers live in shared memory
                buffer = shared_empty(offsets[-1], dtype, comm=as_comm(self.comm))
            else:
                buffer = xp.empty(offsets[-1], dtype)
            buckets.append(Bucket(index, [n for n, _ in group], buffer, offsets))
        return buckets

    def _reset(self) -> None:
        for bucket in self.buckets:
            bucket.pending = set(bucket.names)
            bucket.handle = None
        self._next = 0

    def ready(self, name: Hashable, array: Any = None) -> None:
        """``name``'s array holds its final local value: launch every bucket that is now complete.

        ``array``: this step's array for ``name`` when it is a new object (a gradient re-allocated
        after ``zero_grad``); same shape and dtype as the registered one. The result is written
        back into it.
        """
        bucket = self.bucket_of.get(name)
        if bucket is None:
            raise ArgumentError(f"GradientBuckets: no array named {name!r}")
        if array is not None:
            old = self.arrays[name]
            if tuple(array.shape) != tuple(old.shape) or array.dtype != old.dtype or type(array) is not type(old):
                raise ArgumentError(f"GradientBuckets: {name!r} was registered as {type(old).__name__} "
                                    f"{tuple(old.shape)} {old.dtype}, now {type(array).__name__} "
                                    f"{tuple(array.shape)} {array.dtype}")
            self.arrays[name] = array
        if name not in bucket.pending:
            raise ArgumentError(f"GradientBuckets: {name!r} was marked ready twice in one step")
        bucket.pending.discard(name)
        if not bucket.pending:  # its launch may still wait for earlier buckets (they start in order)
            timeline.instant(f"bucket {bucket.index} ready", "bucket", bucket=bucket.index, step=self.step)
        while self._next < len(self.buckets) and not self.buckets[self._next].pending:
            self._launch(self.buckets[self._next])
            self._next += 1

    def _launch(self, bucket: Bucket) -> None:
        for name, start, stop in zip(bucket.names, bucket.offsets, bucket.offsets[1:], strict=False):
            bucket.buffer[start:stop] = self.arrays[name].reshape(-1)
        compressor = self.compressor
        key = f"{self.key_prefix}{bucket.index}"
        if isinstance(compressor, AutoCodec) and self.steps >= self.warmup_steps:
            comm = as_comm(self.comm)
            if bucket.index == 0:  # a step's first launch: nothing in flight, so the model may be agreed on
                compressor.prepare(comm)
            compressor = compressor.resolve(comm, key, int(bucket.buffer.nbytes))
        if compressor is None or self.steps < self.warmup_steps:
            op = "avg" if self.average else "sum"
            # a compressed path's name (two_phase ...) during the warm-up: the dense all-reduce's auto
            dense = self.algorithm if self.algorithm in algorithm_names("allreduce") else "auto"
            bucket.handle = iallreduce(bucket.buffer, op, algorithm=dense, comm=self.comm, out=bucket.buffer)
        else:
            parts = [tuple(self.arrays[name].shape) for name in bucket.names]
            # shm is a dense algorithm: a compressed bucket on shared buffers takes the compressed auto path
            compressed_algorithm = "auto" if self.algorithm == "shm" else self.algorithm
            bucket.handle = compressed_iallreduce(bucket.buffer, compressor, key=key, comm=self.comm,
                                                  average=self.average, algorithm=compressed_algorithm, parts=parts)
        if timeline.recording():  # from launch to done, on the launching thread's row
            launched, tid, step = timeline.now_ns(), threading.get_native_id(), self.step
            bucket.handle.add_done_callback(lambda h, b=bucket: timeline.complete(
                f"bucket {b.index}", "bucket", launched, timeline.now_ns(), tid=tid, bucket=b.index, step=step,
                bytes=int(b.buffer.nbytes), arrays=len(b.names)))

    def wait(self) -> None:
        """Finish every bucket's all-reduce and write the results into the arrays; ready for the next step."""
        missing = [name for b in self.buckets for name in b.names if name in b.pending]
        if missing:
            raise ArgumentError(f"GradientBuckets: {len(missing)} array(s) never marked ready this step, e.g. "
                                f"{missing[:5]}; call ready() for every array before wait()")
        try:
            for bucket in self.buckets:
                result = bucket.handle.wait()
                for name, start, stop in zip(bucket.names, bucket.offsets, bucket.offsets[1:], strict=False):
                    target = self.arrays[name]
                    target[...] = result[start:stop].reshape(target.shape)
            self.steps += 1
        finally:  # an error in one step must not leave the next one "marked ready twice"
            for bucket in self.buckets:
                if bucket.handle is not None and not bucket.handle.done:
                    with contextlib.suppress(Exception):  # the first error is the one raised
                        bucket.handle.wait()
            self._reset()
            self.step += 1

    def state_dict(self) -> dict[str, Any]:
        """The completed step count (where the dense warm-up stands), to checkpoint."""
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.steps = int(state["steps"])

    def allreduce_all(self) -> None:
        """Mark every array ready (in reverse order) and wait: one call for the whole set."""
        for name in reversed(list(self.arrays)):
            self.ready(name)
        self.wait()
