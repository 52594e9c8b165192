"""Cross-rank argument checks: do all ranks call the same collective with the same arguments?

A mismatch (one rank passes 1000 elements, another 999; float32 against float64; different
roots; one rank's arguments rejected locally while the others go on) would otherwise hang or
corrupt memory. With ``config.validate`` on (the default) every collective runs its local
checks inside an :class:`Agreement`, then exchanges a small signature, a few int64s, with every
rank (an allgather along recursive doubling's schedule, :mod:`.inband`; a small all-reduce's
data rides in the same messages):

- if a rank's local checks failed, that rank raises its own error and every other rank raises
  :class:`~mpicoll.errors.PeerError` naming it and quoting its message;
- if any field differs, every rank raises the same :class:`~mpicoll.errors.MismatchError`,
  naming the ranks and their values.

``MPICOLL_VALIDATE=0`` skips the exchange once a program is known to be correct: it costs
``log2 p`` small messages per call, and no extra round for an all-reduce of at most 64 KiB.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np

from .. import timeline
from ..config import config
from ..errors import MismatchError, PeerError
from ..transport import Comm
from ..transport.watchdog import waiting_on
from . import inband as inband_
from .ops import ReduceOp, op_names
from .registry import COLLECTIVES, algorithm_names

_DTYPES = [np.dtype(t) for t in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
)]
#: int64 per rank in the agreement: the fields, then the carried value
WIDTH = 14
_FIELDS = ("failed", "collective", "count", "dtype", "op", "root", "algorithm", "counts", "segment_bytes",
           "compressor", "parts", "stream", "inband")
_COLLECTIVE_CODES = {name: i for i, name in enumerate(COLLECTIVES)}
_OP_CODES = {name: i for i, name in enumerate(op_names())}
_DTYPE_CODES = {dtype: i for i, dtype in enumerate(_DTYPES)}


def _dtype_code(dtype: Any) -> int:
    if dtype is None:
        return -1
    dtype = np.dtype(dtype)
    code = _DTYPE_CODES.get(dtype)
    if code is None:  # an exotic dtype: compare by its itemsize-qualified name
        code = 1000 + zlib.crc32(dtype.str.encode()) % 1000000
    return code


def _counts_code(counts: Sequence[int] | None) -> int:
    if counts is None:
        return -1
    return zlib.crc32(np.asarray(counts, dtype=np.int64).tobytes())


def _describe(field: str, collective: str, code: int) -> str:
    if field == "collective":
        return COLLECTIVES[code] if 0 <= code < len(COLLECTIVES) else str(code)
    if field == "dtype":
        return str(_DTYPES[code]) if 0 <= code < len(_DTYPES) else f"non-standard dtype #{code}"
    if field == "op":
        names = op_names()
        return names[code] if 0 <= code < len(names) else "(none)"
    if field == "algorithm":
        names = algorithm_names(collective)
        return names[code] if 0 <= code < len(names) else str(code)
    if field == "counts":
        return "(none)" if code == -1 else f"list with checksum {code:#x}"
    if field == "compressor":
        return "(none)" if code == -1 else f"a compressor with fingerprint {code:#x}"
    if field == "parts":
        return "(none)" if code == -1 else f"tensor shapes with checksum {code:#x}"
    if field == "stream":
        return "(none)" if code == -1 else f"random stream {code:#x}"
    if field == "inband":
        return "data in band (a host array of at most 64 KiB)" if code == 1 else "no data in band"
    return str(code)


class Agreement:
    """Run a collective's local argument checks, then agree with the other ranks.

    Use as ``with Agreement(comm, "allreduce") as agree: ...checks...; agree.set(count=...)``.
    With validation on, leaving the block always performs the exchange, even when a local check
    raised, so that no rank is left waiting in a collective its peers abandoned.

    ``carry=True`` reserves one int64 per rank that rides along uncompared (a payload size, say):
    :meth:`carry` sets this rank's, and after the block :attr:`carried` holds every rank's (or
    ``None`` with validation off, when nothing was exchanged). Whether a collective carries is
    fixed by the collective, never by an argument, so that every rank's row has the same length.
    """

    def __init__(self, comm: Comm, collective: str, *, carry: bool = False) -> None:
        self.comm = comm
        self.collective = collective
        self.fields: dict[str, Any] = {}
        self._carry = -1 if carry else None
        #: every rank's carried value, in rank order, once the exchange ran (``carry=True`` only)
        self.carried: np.ndarray | None = None
        self._inband: tuple[Any, ReduceOp] | None = None
        #: the all-reduce of the array given to :meth:`reduce_along`, once the agreement succeeded
        #: (``None`` with validation off, or without one); valid until the next call on the communicator
        self.reduced: Any = None

    def reduce_along(self, work: Any, op: ReduceOp) -> None:
        """All-reduce ``work`` (1-D contiguous host array, see :func:`.inband.carries`; only read)
        in the agreement's own messages; afterwards :attr:`reduced` holds the result whenever the
        agreement succeeds with validation on. Call it last in the block."""
        self._inband = (work, op)

    def carry(self, value: int) -> None:
        """This rank's value to hand to every rank with the agreement (``carry=True`` only)."""
        if self._carry is None:
            raise RuntimeError(f"Agreement({self.collective!r}) was made without carry=True")
        self._carry = int(value)

    def set(self, **fields: Any) -> None:
        """Record this rank's arguments: count, dtype, op, root, algorithm, counts, compressor, parts, stream."""
        self.fields.update(fields)

    def __enter__(self) -> Agreement:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if error is not None and not isinstance(error, Exception):
            return False  # KeyboardInterrupt, SystemExit: the process is going away
        # any exception, a bug included: the peers must hear of it, or they wait here forever
        if config.get("validate"):
            t0 = timeline.now_ns()
            try:
                inband = self._inband if error is None else None
                got = exchange(self.comm, self.collective, error, carry=self._carry, inband=inband, **self.fields)
                if inband is None:
                    self.carried = got
                else:
                    self.reduced = got
            finally:
                if timeline.recording():
                    timeline.phase("agreement", t0)
        return False


def exchange(comm: Comm, collective: str, error: BaseException | None, *, count: int = -1, dtype: Any = None,
             algorithm: str | None = None, op: str | None = None, root: int = -1,
             counts: Sequence[int] | None = None, compressor: str | None = None,
             parts: Sequence[tuple[int, ...]] | None = None, stream: int | None = None,
             carry: int | None = None, inband: tuple[Any, ReduceOp] | None = None) -> np.ndarray | None:
    """The collective part of :class:`Agreement`; raises on every rank if anything disagrees.

    ``inband``: ``(work, op)`` to all-reduce in the same messages (see :mod:`.inband`).

    Returns every rank's ``carry`` value (rank order) when one was given; with ``inband``, the
    all-reduced array; else ``None``."""
    key = _key(collective, count, dtype, algorithm, op, root, counts, compressor, parts, stream, inband is not None)
    signature = _row_for(key, error is not None)
    row = signature
    if carry is not None:  # every row has the carried column (-1 unused), so lengths match across collectives
        row = signature.copy()
        row[-1] = carry
    table = inband_.table(comm, row.size)  # one per communicator, the same array every call
    table[comm.rank] = row
    got = inband_.gather_rows(comm, table, *(inband or ()))  # tells the watchdog what it waits for
    return judge(comm, collective, error, table, signature, got, carry=carry, inband=inband is not None)


def signature_of(collective: str, *, count: int = -1, dtype: Any = None, algorithm: str | None = None,
                 op: str | None = None, root: int = -1, counts: Sequence[int] | None = None,
                 compressor: str | None = None, parts: Sequence[tuple[int, ...]] | None = None,
                 stream: int | None = None, inband: bool = False) -> np.ndarray:
    """The row a rank whose local checks passed contributes to :func:`exchange` for these
    arguments (read only: it is the memoized array)."""
    key = _key(collective, count, dtype, algorithm, op, root, counts, compressor, parts, stream, inband)
    return _row_for(key, False)


def judge(comm: Comm, collective: str, error: BaseException | None, table: np.ndarray, signature: np.ndarray,
          got: Any, *, carry: int | None = None, inband: bool = False) -> Any:
    """Decide from the gathered ``table`` (every rank's row; ``signature`` is this rank's without
    the carried value, ``got`` what :func:`.inband.gather_rows` returned): the same outcome on every
    rank, since every rank holds the same table. Raises :class:`MismatchError` /
    :class:`PeerError` as :func:`exchange` documents; else returns what it returns."""
    if carry is None and table.tobytes() == signature.tobytes() * comm.size:  # the common case: one comparison
        if got is False:  # cannot happen: equal rows mean every message had the length expected
            raise RuntimeError(f"{collective}: the argument check's messages had unexpected lengths although "
                               f"every rank's arguments agree (an mpicoll bug; please report it)")
        return got if inband else None
    carried, table = table[:, -1].copy(), table[:, :-1]
    if (table == signature[:-1]).all():
        return carried if carry is not None else None
    if table[:, 0].any():
        _peer_failures(comm, collective, error, table[:, 0].copy())
        return None  # this rank failed: its own error propagates from the with-block
    differing = [i for i in range(table.shape[1]) if not (table[:, i] == table[0, i]).all()]
    raise _mismatch(collective, table.copy(), differing[0])


def _key(collective: str, count: int, dtype: Any, algorithm: str | None, op: str | None, root: int,
         counts: Sequence[int] | None, compressor: str | None, parts: Sequence[tuple[int, ...]] | None,
         stream: int | None, inband: bool) -> tuple[Any, ...]:
    """What a signature depends on (the settings' pipeline segment size included), hashable."""
    return (collective, count, dtype, algorithm, op, root, None if counts is None else tuple(counts),
            config.get("segment_bytes"), compressor, None if parts is None else tuple(tuple(s) for s in parts),
            stream, inband)


_signatures: dict[tuple[Any, ...], np.ndarray] = {}
"""Signatures of successful calls by their arguments: a loop repeating one call encodes it once."""


def _row_for(key: tuple[Any, ...], failed: bool) -> np.ndarray:
    """The signature for ``key``: memoized unless ``failed``."""
    found = None if failed else _signatures.get(key)
    return found if found is not None else _signature(failed, key)


def _signature(failed: bool, key: tuple[Any, ...]) -> np.ndarray:
    """The int64 row one rank contributes to the agreement (see ``_FIELDS``); memoized unless ``failed``."""
    collective, count, dtype, algorithm, op, root, counts, segment_bytes, compressor, parts, stream, inband = key
    names = algorithm_names(collective)
    signature = np.array([
        1 if failed else 0,
        _COLLECTIVE_CODES[collective],
        count,
        _dtype_code(dtype),
        _OP_CODES.get(op, -1),
        root,
        names.index(algorithm) if algorithm in names else -1,
        _counts_code(counts),
        segment_bytes,
        -1 if compressor is None else zlib.crc32(compressor.encode()),
        -1 if parts is None else zlib.crc32(repr([tuple(s) for s in parts]).encode()),
        -1 if stream is None else stream,
        1 if inband else 0,
        -1,  # the carried value (see Agreement), never compared: the same row length for every collective
    ], dtype=np.int64)
    if signature.size != WIDTH:  # made once per distinct call: the check costs nothing in a loop
        raise RuntimeError(f"agreement row of {signature.size} int64, WIDTH says {WIDTH}")
    if not failed:
        if len(_signatures) > 4096:
            _signatures.clear()
        _signatures[key] = signature
    return signature


def _peer_failures(comm: Comm, collective: str, error: BaseException | None, failed: np.ndarray) -> None:
    waiting_on(None, "the exchange of error messages")
    messages = comm.mpi.allgather(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        return
    bad = [int(r) for r in np.flatnonzero(failed)]
    quoted = "; ".join(f"rank {r}: {messages[r]}" for r in bad)
    raise PeerError(f"{collective}: {_rank_list(bad)} rejected the call, so no rank ran it. {quoted}. "
                    f"Fix the arguments on {_rank_list(bad)}.", rank=bad[0])


def _rank_list(ranks: list[int]) -> str:
    """``[0, 2, 3, 4]`` -> ``"ranks 0, 2-4"``."""
    runs: list[list[int]] = []
    for r in ranks:
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return ("rank " if len(ranks) == 1 else "ranks ") + text


def _mismatch(collective: str, table: np.ndarray, column: int) -> MismatchError:
    """The same error, word for word, on every rank (so logs of all ranks agree)."""
    field = _FIELDS[column]
    values = {rank: _describe(field, collective, int(code)) for rank, code in enumerate(table[:, column])}
    groups: dict[str, list[int]] = {}
    for rank, value in values.items():
        groups.setdefault(value, []).append(rank)
    listing = "; ".join(f"{_rank_list(ranks)}: {value}" for value, ranks in groups.items())
    if field == "collective":
        message = (f"ranks called different collectives at the same point: {listing}. Every rank must call "
                   f"the same collectives in the same order.")
    elif field == "stream":
        message = (f"{collective}: ranks would draw different random indices: {listing}. Every rank must use the "
                   f"same seed and key and compress each key equally often (check restored step counters).")
    elif field == "inband":
        message = (f"{collective}: {listing}. Ranks passed arrays of the same size that live in different "
                   f"places (host or device); pass them all on the host or all on the device.")
    elif field == "segment_bytes":
        message = (f"{collective}: ranks use different pipeline segment sizes: {listing}. Set segment_bytes "
                   f"(MPICOLL_SEGMENT_BYTES) to the same value on every rank.")
    else:
        message = (f"{collective}: ranks passed different {field}: {listing}. Every rank must call {collective} "
                   f"with the same count, dtype, op, root and algorithm (check the arrays and arguments on "
                   f"the ranks named).")
    message += " Set MPICOLL_VALIDATE=0 to skip this check."
    return MismatchError(message, field=field, values=values)
