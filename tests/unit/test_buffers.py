"""Local argument checks of the public collectives (no MPI needed)."""

from __future__ import annotations

import numpy as np
import pytest

import mpicoll
from mpicoll.collectives.buffers import check_array, check_out
from mpicoll.errors import ArgumentError, DtypeError


class FakeCupyArray:
    """Looks like a CuPy array to mpicoll's backend detection (its type lives in a 'cupy' module)."""

    dtype = np.dtype(np.float32)


FakeCupyArray.__module__ = "cupy._core.core"


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
