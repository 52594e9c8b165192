"""``compressor="auto"``: per gradient bucket, the codec the cost model predicts fastest, or none.

An :class:`AutoCodec` stands where a compressor would (``GradientBuckets``, the DDP hook's
``HookState``, ``DistributedOptimizer``). At the start of the first compressed step, when no
collective is in flight, every rank calls :meth:`AutoCodec.prepare`: it loads the machine model
(:mod:`mpicoll.model`; from ``model=``, ``config.model``, or a probe of this job run then) and
makes it identical on every rank (rank 0's, broadcast). Each bucket's decision is then a pure
function of that model, the bucket's size and the rank layout, all the same on every rank, so
:meth:`AutoCodec.resolve` needs no communication (it may run while other buckets' all-reduces
are in flight) and every rank picks the same codec: the one with the lowest predicted time for
one all-reduce of the bucket, or none. Each decision is logged once (logger ``mpicoll.auto``,
rank 0) with the predicted times and kept in :attr:`AutoCodec.decisions`.

It is never re-decided silently: a codec change would strand error-feedback residuals. A
decision is made at a bucket's first compressed step (after any dense warm-up, when no residual
exists yet) and kept, in checkpoints too; :meth:`AutoCodec.reset` forgets the decisions and the
residuals together, on every rank, at a point the caller chooses (e.g. between epochs).

The default allowed set holds the codecs that kept accuracy at the user's own learning rate in
the digits and language-model grids (bench/RESULTS.md, issue 14): ``fp16`` and PowerSGD rank 4
with error feedback. Top-k and sign need DGC's momentum correction (mpicoll.torch.DGC, or
``DistributedOptimizer``'s automatic correction for a fixed error-feedback codec), so they are
opt-in here; ``DistributedOptimizer`` does not apply that correction to an ``AutoCodec``, whose
codec is not known when the optimizer is made.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable
from typing import Any

from ..compression import Compressor, ErrorFeedback
from ..compression import get as get_compressor
from ..config import config
from ..errors import ArgumentError
from ..model import Layout, Machine, choose_codec
from ..transport import Comm

#: codecs ``auto`` may pick by default, with their parameters (see the module docstring)
DEFAULT_ALLOWED: dict[str, dict[str, Any]] = {"fp16": {}, "powersgd": {"rank": 4}}
#: further codecs a user may allow by name
KNOWN: dict[str, dict[str, Any]] = {**DEFAULT_ALLOWED, "bf16": {}, "int8": {}, "sign": {}, "qsgd": {},
                                    "topk": {"ratio": 0.01}, "randomk": {"ratio": 0.01}}
_log = logging.getLogger("mpicoll.auto")


class AutoCodec:
    """Choose a codec per bucket from the cost model (see the module docstring).

    Args:
        allowed: codec names ``auto`` may pick (``none`` is always a candidate); default
            :data:`DEFAULT_ALLOWED`. Names from :data:`KNOWN`, with its parameters.
        model: a :class:`~mpicoll.model.Machine`, or the path of ``mpicoll-bench probe --json``'s
            file; default ``config.model``, else a probe of this job at the first decision.
        margin: a codec must be predicted faster than the uncompressed all-reduce by more than this
            fraction (default 0.1): compression changes the training, so it must pay clearly.
        error_feedback: wrap the lossy codecs in :class:`~mpicoll.compression.ErrorFeedback`.
    """

    def __init__(self, allowed: Iterable[str] | None = None, *, model: Machine | str | None = None,
                 margin: float = 0.1, error_feedback: bool = True) -> None:
        names = list(DEFAULT_ALLOWED if allowed is None else allowed)
        unknown = [n for n in names if n not in KNOWN and n != "none"]
        if unknown:
            raise ArgumentError(f"AutoCodec: unknown codec(s) {unknown}; accepted: {sorted(KNOWN)}")
        if not 0 <= margin < 10:
            raise ArgumentError(f"AutoCodec: margin={margin!r}; accepted: 0 <= margin < 10")
        self.allowed = [n for n in names if n != "none"]
        self.margin, self.error_feedback = margin, error_feedback
        self._model = model
        self._ready: Machine | None = None  # the model every rank holds alike, once prepared
        #: bucket key -> the chosen codec's name ("none": uncompressed), the same on every rank
        self.decisions: dict[Hashable, str] = {}
        #: bucket key -> the predicted seconds per candidate that decided it
        self.predictions: dict[Hashable, dict[str, float]] = {}
        self._codecs: dict[str, Compressor] = {}

    def prepare(self, comm: Comm) -> Machine:
        """Load or probe the model and make it the same on every rank (collective; call it where
        no other collective is in flight, e.g. before a step's first bucket). Idempotent."""
        if self._ready is not None:
            return self._ready
        model = self._model
        document: Any = None
        if isinstance(model, Machine):
            document = model.to_json()
        elif model or config.get("model"):
            path = model or config.get("model")
            if comm.rank == 0:  # a missing or broken file must fail every rank, not leave them in the bcast
                try:
                    document = Machine.load(path).to_json()
                except (OSError, ValueError, ArgumentError) as error:
                    document = f"AutoCodec: cannot read the machine model {path!r}: {error}"
        else:
            from ..model.probe import probe

            document = probe(comm, codecs={n: KNOWN[n] for n in self.allowed}).to_json()
        document = comm.mpi.bcast(document if comm.rank == 0 else None, root=0)
        if isinstance(document, str):
            raise ArgumentError(document)
        self._ready = Machine.from_json(document)
        return self._ready

    def resolve(self, comm: Comm, key: Hashable, nbytes: int) -> Compressor | None:
        """The compressor for bucket ``key`` of ``nbytes`` (``None``: reduce it uncompressed).
        Local (no communication) once :meth:`prepare` has run; the same on every rank."""
        name = self.decisions.get(key)
        if name is None:
            if self._ready is None:
                raise ArgumentError("AutoCodec.resolve before prepare(): call prepare(comm) on every rank first")
            choice = choose_codec(self._ready, nbytes, Layout.of(comm.hosts), self.allowed, margin=self.margin)
            name = self.decisions[key] = choice.codec
            self.predictions[key] = choice.predicted
            if comm.rank == 0:
                _log.info("mpicoll auto: bucket %r (%d bytes) on %d ranks: %s", key, nbytes, comm.size,
                          choice.describe())
        return None if name == "none" else self._codec(name)

    def _codec(self, name: str) -> Compressor:
        codec = self._codecs.get(name)
        if codec is None:
            codec = get_compressor(name, **KNOWN[name])
            if self.error_feedback and not codec.lossless:
                codec = ErrorFeedback(codec)
            self._codecs[name] = codec
        return codec

    def reset(self) -> None:
        """Forget every decision and residual (call it on every rank at the same point)."""
        self.decisions.clear()
        self.predictions.clear()
        self._codecs.clear()

    def state_dict(self) -> dict[str, Any]:
        """The decisions and each chosen codec's state (residuals), for a checkpoint."""
        return {"decisions": dict(self.decisions), "codecs": {n: c.state_dict() for n, c in self._codecs.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the same decisions on every rank, as they were taken)."""
        self.reset()
        self.decisions.update(state.get("decisions", {}))
        for name, codec_state in state.get("codecs", {}).items():
            self._codec(name).load_state_dict(codec_state)

    def __repr__(self) -> str:
        return f"AutoCodec(allowed={self.allowed}, margin={self.margin})"


def resolve_compressor(compressor: Any) -> Compressor | AutoCodec | None:
    """``compressor=`` of the bucket front ends: ``None``, a compressor, an :class:`AutoCodec`, or
    the string ``"auto"`` (an :class:`AutoCodec` with the defaults)."""
    if compressor == "auto":
        return AutoCodec()
    if compressor is None or isinstance(compressor, (Compressor, AutoCodec)):
        return compressor
    raise ArgumentError(f"compressor must be None, 'auto', an AutoCodec or an mpicoll compressor, got {compressor!r}")
