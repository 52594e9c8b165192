"""A stand-in GPU for testing host staging on the CPU.

"Device" buffers are NumPy arrays. Copies to the device happen at once (the algorithms reduce
with NumPy right after), but their events stay pending until waited on or polled a few times,
and the fake checks the staging contract: no host buffer is handed out, written by a copy or
given to MPI while a device copy still reads it.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np


class Event:
    def __init__(self, host: np.ndarray, polls: int) -> None:
        self.host, self.polls_left = host, polls

    @property
    def pending(self) -> bool:
        return self.polls_left > 0


class FakeDevice:
    def __init__(self, pending_polls: int = 2) -> None:
        self.pending_polls = pending_polls
        self.allocated: list[np.ndarray] = []
        self.events: list[Event] = []
        self.to_host_calls = self.to_device_calls = self.waits = 0

    def allocate_pinned(self, nbytes: int) -> np.ndarray:
        buffer = np.zeros(nbytes, dtype=np.uint8)
        self.allocated.append(buffer)
        return buffer

    def busy(self, host: np.ndarray) -> bool:
        """Whether a pending device copy reads memory of ``host``."""
        return any(e.pending and np.shares_memory(e.host, host) for e in self.events)

    def to_host(self, device: Any, host: np.ndarray) -> None:
        assert not self.busy(host), "a host buffer was overwritten while a device copy still read it"
        self.to_host_calls += 1
        host[...] = np.ascontiguousarray(device).reshape(-1).view(np.uint8)

    def to_device(self, host: np.ndarray, device: Any) -> Event:
        self.to_device_calls += 1
        device.reshape(-1).view(np.uint8)[...] = host
        event = Event(host, self.pending_polls)
        self.events = [e for e in self.events if e.pending] + [event]
        return event

    def done(self, event: Event) -> bool:
        event.polls_left -= 1
        return not event.pending

    def wait(self, event: Event) -> None:
        self.waits += 1
        event.polls_left = 0


class FakeCupyArray:
    """Looks like a CuPy array to mpicoll's backend detection once :func:`install_fake_cupy` ran."""

    dtype = np.dtype(np.float32)


FakeCupyArray.__module__ = "cupy._core.core"


def install_fake_cupy(monkeypatch: Any) -> None:
    """A stand-in ``cupy`` module whose ``ndarray`` is the fake: mpicoll takes an object for a CuPy array
    only if it is an instance of ``cupy.ndarray`` (a type that merely claims a cupy module is refused)."""
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(ndarray=FakeCupyArray))
