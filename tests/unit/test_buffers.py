"""Local argument checks of the public collectives (no MPI needed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from staging_fake import FakeCupyArray, install_fake_cupy

import mpicoll
from mpicoll.collectives.buffers import check_array, check_out
from mpicoll.errors import ArgumentError, DtypeError


@pytest.fixture(autouse=True)
def fake_cupy(monkeypatch):
    install_fake_cupy(monkeypatch)


def test_gpu_arrays_are_accepted_whatever_the_cuda_awareness():  # staged unless MPI is CUDA-aware
    for setting in ("unset", "0", "1"):
        with mpicoll.config.override(cuda_aware=setting):
            assert isinstance(check_array(FakeCupyArray(), "allreduce"), FakeCupyArray)


def test_non_arrays_and_object_arrays():
    with pytest.raises(ArgumentError, match=r"numpy\.asarray"):
        check_array([1, 2], "allreduce")
    with pytest.raises(DtypeError, match="object"):
        check_array(np.array([1, "a"], dtype=object), "allreduce")


def test_out_checks():
    x = np.ones((3, 4), dtype=np.float32)
    assert check_out(None, (3, 4), x.dtype, x, "f").shape == (3, 4)
    assert check_out(x, (3, 4), x.dtype, x, "f") is x
    with pytest.raises(ArgumentError, match="overlaps"):
        check_out(x[::-1], (3, 4), x.dtype, x, "f")
    with pytest.raises(ArgumentError, match=r"shape \(4, 3\), expected \(3, 4\)"):
        check_out(np.ones((4, 3), np.float32), (3, 4), x.dtype, x, "f")
    with pytest.raises(DtypeError, match="float64, expected float32"):
        check_out(np.ones((3, 4)), (3, 4), x.dtype, x, "f")


def test_a_type_that_only_claims_a_cupy_module_is_not_an_array(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    with pytest.raises(ArgumentError, match="NumPy or CuPy array"):
        check_array(FakeCupyArray(), "allreduce")


def test_read_only_out_is_refused_locally():  # issue 13, break 12: refused in the agreement, not mid-ring
    x = np.ones(8, np.float32)
    frozen = np.ones(8, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ArgumentError, match="read-only"):
        check_out(frozen, (8,), x.dtype, x, "allreduce")
    with pytest.raises(ArgumentError, match="read-only"):
        check_out(frozen, (8,), x.dtype, frozen, "allreduce")
