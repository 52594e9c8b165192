"""Small agreements between ranks for the PyTorch adapter, on a communicator of their own.

:class:`StepAgreement` holds a private ``Dup()`` of a communicator (one per :class:`mpicoll.Comm`,
made on first use and freed with it). The optimizer's per-step agreement (how many ranks still
have data, which parameters got gradients) runs there, so it can never be matched against the
gradient all-reduces (on the progress engine's communicator) nor against collectives the
application runs on its own communicator. That is what lets a rank that ran out of data ask
"is anyone still training?" first and join the gradient all-reduces after, while the others
started their all-reduces first and ask after.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import MismatchError, PeerError
from ..transport import Comm, as_comm
from ..transport.watchdog import watch

_CACHE_KEY = "torch-step-agreement"


class StepAgreement:
    """A private duplicate of ``comm`` for the adapter's small agreements. Collective to create."""

    def __init__(self, comm: Comm) -> None:
        self.comm = Comm(comm.mpi, hosts=comm.hosts)

    @classmethod
    def of(cls, comm: Any = None) -> StepAgreement:
        """The agreement communicator of ``comm`` (made collectively on first use)."""
        c = as_comm(comm)
        agreement = c.cache.get(_CACHE_KEY)
        if agreement is None:
            agreement = c.cache[_CACHE_KEY] = cls(c)
        return agreement

    def sum(self, local: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``MPI_Allreduce`` (sum) of a small int32 vector; one latency, no argument exchange
        (its length was agreed when the optimizer was made)."""
        from mpi4py import MPI

        with watch(self.comm.rank, "optimizer step agreement", "native"):
            self.comm.mpi.Allreduce(local, out, MPI.SUM)
        return out

    def check_same(self, what: str, fields: Sequence[Any], error: str | None = None) -> None:
        """Raise on every rank unless every rank passed the same ``fields`` and no ``error``.

        A rank whose own ``error`` is set raises nothing here (it raises its own error after);
        the others raise :class:`PeerError` quoting it. Differing fields raise the same
        :class:`MismatchError` everywhere, naming the ranks that differ from rank 0.
        """
        digest = None if error is not None else zlib.crc32(repr(list(fields)).encode())
        everyone = self.comm.mpi.allgather((digest, error))
        failed = {r: e for r, (_, e) in enumerate(everyone) if e is not None}
        if failed:
            if error is not None:
                return
            rank, message = next(iter(failed.items()))
            raise PeerError(f"{what}: rank {rank} refused its arguments: {message}")
        differ = [r for r, (d, _) in enumerate(everyone) if d != everyone[0][0]]
        if differ:
            raise MismatchError(f"{what}: ranks {differ} passed other names, shapes or dtypes than rank 0; "
                                f"every rank must pass the same parameters in the same order")

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's (picklable) ``value``."""
        return self.comm.mpi.allgather(value)

    def close(self) -> None:
        """Free the communicator (collective; :meth:`mpicoll.Comm.free` calls it)."""
        self.comm.free()
