"""Host staging of GPU buffers: settings, the pinned-buffer pool and staged messages (CPU stand-in)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from mpi4py import MPI
from staging_fake import FakeCupyArray, FakeDevice, install_fake_cupy

import mpicoll
from mpicoll.collectives.partition import segment_elements, segments
from mpicoll.transport import p2p, staging
from mpicoll.transport.staging import PinnedPool, Stager


@pytest.fixture(autouse=True)
def fake_cupy(monkeypatch):
    install_fake_cupy(monkeypatch)


def test_gpu_buffers_are_staged_unless_mpi_is_cuda_aware(monkeypatch):
    monkeypatch.setattr(staging, "_warned_unset", False)
    with mpicoll.config.override(cuda_aware="unset"), pytest.warns(UserWarning, match="MPICOLL_CUDA_AWARE is unset"):
        assert staging.needs_staging(FakeCupyArray())
    with mpicoll.config.override(cuda_aware="unset"), warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert staging.needs_staging(FakeCupyArray())
    monkeypatch.setattr(staging, "_warned_unset", False)
    with mpicoll.config.override(cuda_aware="0"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert staging.needs_staging(FakeCupyArray())
    with mpicoll.config.override(cuda_aware="1"):
        assert not staging.needs_staging(FakeCupyArray())
    assert not staging.needs_staging(np.ones(3))


def test_pool_reuses_buffers_across_calls():
    device = FakeDevice()
    pool = PinnedPool(device)
    for _ in range(50):  # one "call": three buffers held at once, then given back
        held = [pool.acquire(n) for n in (1000, 5000, 1000)]
        assert [h.nbytes for h in held] == [1000, 5000, 1000]
        for h in held:
            pool.release(h)
    assert pool.allocations == 3 and len(device.allocated) == 3
    assert pool.nbytes == 4096 + 8192 + 4096  # size classes


def test_pool_never_hands_out_a_buffer_a_copy_still_reads():
    device = FakeDevice(pending_polls=1000)
    pool = PinnedPool(device)
    a, b = pool.acquire(100), pool.acquire(100)
    pool.release(a, device.to_device(a, np.zeros(100, np.uint8)))  # a: still being copied to the device
    pool.release(b)
    again = pool.acquire(100)
    assert np.shares_memory(again, b) and device.waits == 0  # the idle one, without waiting
    last = pool.acquire(100)
    assert np.shares_memory(last, a) and device.waits == 1 and not device.busy(last)  # waited for the copy
    assert pool.allocations == 2


def test_segment_schedule_is_the_staging_chunking():
    """Staged messages are the algorithms' pipeline segments: they tile the buffer, in order, each
    at most ``segment_bytes`` long, so both sides stage the same chunks."""
    for count, item in [(0, 4), (1, 4), (1024, 4), (1025, 4), (100003, 8), (7, 2), (5000, 3000)]:
        parts = segments(count, segment_elements(4096, item))
        assert [lo for lo, _ in parts] == [0, *(hi for _, hi in parts[:-1])][:len(parts)]
        assert (parts[-1][1] if parts else 0) == count
        assert all(0 < (hi - lo) * item <= max(4096, item) for lo, hi in parts)


def test_staged_messages_arrive_only_after_wait_and_give_their_buffers_back():
    device = FakeDevice()
    stager = Stager(device)
    comm = MPI.COMM_SELF
    for step in range(20):
        source = (np.arange(3000, dtype=np.float32) + step)
        target = np.full(3000, -1, dtype=np.float32)
        receive = stager.irecv(comm, target, 0, tag=step)
        send = stager.isend(comm, source, 0, tag=step)
        assert (target == -1).all()  # nothing reaches the device before completion
        p2p.waitall([send, receive])
        np.testing.assert_array_equal(target, source)
    assert stager.pool.allocations == 2 and device.to_host_calls == device.to_device_calls == 20
