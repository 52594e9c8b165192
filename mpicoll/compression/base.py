"""The compressor protocol: ``compress(x, key) -> (payload, ctx)``, ``decompress(payload, ctx) -> x'``.

A payload is one contiguous uint8 buffer (see :mod:`.payload`) that can cross the wire as it
is; ``ctx`` is what the *local* rank remembers to decode it (shape, dtype, key, step). Because
every rank compresses the same tensor shapes under the same keys in the same order, a rank's own
``ctx`` also decodes its peers' payloads: that is what compressed collectives rely on.

Traits (class attributes) tell a collective how payloads may be combined:

- ``kind = "summable"``: payloads of all ranks share one layout, so the wire form can be
  summed element by element (the array itself for ``none``, fp16, bf16, random-k with shared
  indices);
- ``kind = "sparse"``: (index, value) pairs, combined by scatter-add (top-k, threshold, COO, CSR);
- ``kind = "quantized"``: codes plus scales, which must be decoded before adding (int8, int4,
  QSGD, sign);
- ``kind = "lowrank"``: factors of a low-rank approximation (PowerSGD), all-reduced one after
  the other by their own path.

(``none`` was once a kind ``"dense"`` of its own; it travels exactly as the summable ones do.)

Compressors never touch MPI and never choose a kernel backend by string: they ask
:func:`mpicoll.kernels.get` for ``(operation, device)``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import kernels
from ..backend import device_of, is_array, xp_of
from ..errors import ArgumentError, DtypeError, PayloadError
from .payload import HEADER_BYTES, Header, allocate, assemble, body_size, parse, sections

FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class Ctx:
    """What :meth:`Compressor.decompress` needs besides the payload."""

    shape: tuple[int, ...]
    dtype: np.dtype
    key: Hashable
    step: int
    device: str

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class Compressor:
    """Base class: subclasses implement :meth:`_encode` and :meth:`_decode` on flat arrays."""

    name: ClassVar[str] = ""
    wire_id: ClassVar[int] = 0
    kind: ClassVar[str] = "summable"
    lossless: ClassVar[bool] = False
    #: whether the wire format overflows far below the inputs' range (fp16): averaging collectives
    #: then divide each contribution before compressing it
    narrow_range: ClassVar[bool] = False

    def __init__(self) -> None:
        self._steps: dict[Hashable, int] = {}

    # ------------------------------------------------------------------ the protocol
    def compress(self, x: Any, key: Hashable = None, *, out: Any = None) -> tuple[Any, Ctx]:
        """Compress ``x`` (NumPy or CuPy, any shape, float16/32/64). ``key`` names the tensor.

        Each call advances the step counter of ``key`` (random choices depend on it). ``out``
        reuses a payload buffer of the right size (fixed-size codecs; see :meth:`payload_nbytes`),
        so that steady-state compression allocates nothing.
        """
        if not is_array(x):
            raise ArgumentError(f"{self.name}: compress needs a NumPy or CuPy array, got {type(x).__name__}")
        if x.dtype not in FLOATS:
            raise DtypeError(f"{self.name}: cannot compress dtype {x.dtype}; accepted: float16, float32, float64")
        ctx = Ctx(tuple(x.shape), x.dtype, key, self.next_step(key), device_of(x))
        flat = xp_of(x).ascontiguousarray(x).reshape(-1)
        return self._encode(flat, ctx, out), ctx

    def next_step(self, key: Hashable) -> int:
        """This call's step for ``key``, advancing the counter (random choices depend on it)."""
        step = self._steps.get(key, 0)
        self._steps[key] = step + 1
        return step

    def decompress(self, payload: Any, ctx: Ctx, *, out: Any = None) -> Any:
        """Decode ``payload`` (this rank's or a peer's) into an array of ``ctx.shape`` and ``ctx.dtype``.

        ``out``: a contiguous array of that shape and dtype to decode into.
        """
        header = self.header_of(payload, ctx)
        if out is None:
            return self._decode(payload, header, ctx, None).reshape(ctx.shape)
        if tuple(out.shape) != ctx.shape or out.dtype != ctx.dtype or not out.flags.c_contiguous:
            raise ArgumentError(f"{self.name}: out must be a contiguous {ctx.dtype} array of shape {ctx.shape}, "
                                f"got {out.dtype} {tuple(out.shape)}")
        flat_out = out.reshape(-1)
        result = self._decode(payload, header, ctx, flat_out)
        if result is not flat_out:
            flat_out[...] = result
        return out

    def header_of(self, payload: Any, ctx: Ctx) -> Header:
        """The checked header of ``payload`` (this rank's or a peer's), which must describe a tensor
        like ``ctx``: every reader of a payload starts here."""
        header = parse(payload, self.wire_id, self.name)
        if header.numel != ctx.numel:
            raise PayloadError(f"{self.name}: payload holds {header.numel} elements but this tensor has {ctx.numel}; "
                               f"ranks must compress tensors of the same shape under the same key")
        if header.dtype != ctx.dtype:
            raise PayloadError(f"{self.name}: payload was made from {header.dtype}, this tensor is {ctx.dtype}")
        return header

    def payload_nbytes(self, x: Any) -> int | None:
        """The payload size for an array like ``x`` if it does not depend on the values, else ``None``."""
        return None

    def payload_bound(self, ctx: Ctx) -> int:
        """The most bytes a well-formed payload of a tensor like ``ctx`` can have: what a receiver is
        willing to allocate for a peer's payload. Exact for fixed-size codecs; for the others, every
        element sent as an int64 index plus a value."""
        fixed = self.payload_nbytes(np.broadcast_to(np.zeros((), ctx.dtype), ctx.shape))  # no memory
        if fixed is not None:
            return fixed
        return HEADER_BYTES + 16 + ctx.numel * (8 + ctx.dtype.itemsize)

    def stream(self, ctx: Ctx) -> int | None:
        """A fingerprint of the random choices every rank must share for this call (``None``: none).
        Compressed collectives compare it across ranks before any payload is combined."""
        return None

    def bind(self, key: Hashable, shape: tuple[int, ...], world_size: int) -> None:
        """Note that ``key`` is being all-reduced as ``shape`` over ``world_size`` ranks (state that
        depends on them, error-feedback residuals, refuses a change)."""

    def snapshot(self) -> Any:
        """A cheap copy of the mutable state (step counters, ...) that :meth:`restore` puts back: a
        compressed collective that is refused or fails restores it, so it changes nothing on any rank.
        State is replaced, never modified in place, between the two."""
        return dict(self._steps)

    def restore(self, snapshot: Any) -> None:
        """Undo everything since :meth:`snapshot`."""
        self._steps = snapshot

    def summable_section(self, payload: Any, ctx: Ctx) -> tuple[Any, str]:
        """For ``kind == "summable"``: the view of ``payload`` that ranks add element by element, and its
        encoding (``"fp16"``, ``"bf16"``, or ``"values"`` for plain numbers of ``ctx.dtype``)."""
        raise NotImplementedError(f"{self.name} payloads are not summable")

    def sparse_parts(self, payload: Any, ctx: Ctx) -> tuple[Any, Any]:
        """For ``kind == "sparse"``: checked flat int64 indices (sorted, unique) and their values."""
        raise NotImplementedError(f"{self.name} payloads are not sparse")

    # ------------------------------------------------------------------ for subclasses
    def _encode(self, flat: Any, ctx: Ctx, out: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement _encode")

    def _decode(self, payload: Any, header: Header, ctx: Ctx, out: Any) -> Any:
        """Decode into ``out`` (flat, ctx.dtype) when given and convenient; return the result."""
        raise NotImplementedError(f"{type(self).__name__} must implement _decode")

    def kernel(self, op: str, device: str) -> Any:
        """The kernel implementing ``op`` on ``device`` (resolved through the provider order)."""
        return kernels.get(op, device)

    def _payload(self, ctx: Ctx, arrays: list[Any], aux0: int = 0, aux1: int = 0, flags: int = 0,
                 out: Any = None) -> Any:
        """A payload holding copies of ``arrays`` (for codecs whose sizes depend on the data)."""
        return assemble(Header(self.wire_id, ctx.dtype, flags, ctx.numel, aux0, aux1, 0), arrays, out)

    def _allocate(self, ctx: Ctx, spec: list[tuple[Any, int]], xp: Any, aux0: int = 0, aux1: int = 0,
                  out: Any = None) -> tuple[Any, list[Any]]:
        """A payload and views of its sections, for kernels to write into directly."""
        return allocate(Header(self.wire_id, ctx.dtype, 0, ctx.numel, aux0, aux1, 0), spec, xp, out)

    def _sections(self, payload: Any, header: Header, spec: list[tuple[Any, int]]) -> list[Any]:
        return sections(payload, header, spec, self.name)

    @staticmethod
    def _size(spec: list[tuple[Any, int]]) -> int:
        return HEADER_BYTES + body_size(spec)

    # ------------------------------------------------------------------ description
    def params(self) -> dict[str, Any]:
        """The parameters this compressor was made with."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Step counters per key, so randomized choices resume in step after a checkpoint."""
        return {"steps": dict(self._steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self._steps = dict(state.get("steps", {}))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"


def check_range(name: str, param: str, value: Any, lo: float, hi: float, *, integer: bool = False,
                lo_open: bool = False) -> Any:
    """Raise :class:`ArgumentError` naming the accepted range unless ``lo (<|<=) value <= hi``."""
    kind_ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    in_range = kind_ok and not isinstance(value, bool) and (lo < value if lo_open else lo <= value) and value <= hi
    if not in_range:
        bracket = "(" if lo_open else "["
        what = "an integer" if integer else "a number"
        raise ArgumentError(f"{name}: {param}={value!r} is out of range; accepted: {what} in {bracket}{lo}, {hi}]")
    return value
