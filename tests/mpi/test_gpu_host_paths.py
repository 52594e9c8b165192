"""GPU arrays on the compressed paths that run in host memory (sparse, quantized, low-rank).

Until the H200 check, these paths refused CuPy arrays, so OneBitAdam, DGC and a top-k DDP hook
failed on CUDA tensors. They now copy the array to the host, run there, and hand back an array of
the input's kind. CuPy cannot run here: a stand-in ``cupy`` module whose ``ndarray`` is a NumPy
subclass plays the GPU (the backend takes any instance of ``cupy.ndarray`` for a GPU array).
The results must be bitwise those of the same call on host arrays, on every rank.
"""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
from mpitools import assert_equal_all, rank_input

import mpicoll
from mpicoll import compression


class StandInGpuArray:
    """A "device" array: the attributes mpicoll reads before it decides where a path runs, and
    ``get()``, which copies to the host as CuPy's does (it is no NumPy array, as a CuPy one is not)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = np.array(data, copy=True)
        self.dtype, self.shape, self.size = self.data.dtype, self.data.shape, self.data.size
        self.nbytes, self.ndim = self.data.nbytes, self.data.ndim

    def get(self) -> np.ndarray:
        return self.data.copy()


@pytest.fixture
def gpu(monkeypatch):
    module = types.ModuleType("cupy")
    module.ndarray = StandInGpuArray
    module.asarray = StandInGpuArray
    monkeypatch.setitem(sys.modules, "cupy", module)
    return module


CODECS = {
    "topk+ef": lambda: compression.ErrorFeedback(compression.get("topk", ratio=0.05)),
    "sign+ef": lambda: compression.ErrorFeedback(compression.get("sign")),
    "qsgd": lambda: compression.get("qsgd"),
    "powersgd": lambda: compression.get("powersgd", rank=2),
}


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_gpu_array_on_a_host_path_equals_the_host_call(comm, gpu, codec):
    on_host, on_gpu = CODECS[codec](), CODECS[codec]()
    for step in range(3):  # residuals and warm starts carry over between steps
        x = rank_input(3000, comm.rank + 7 * step, "float32").reshape(60, 50)
        want = mpicoll.compressed_allreduce(x, on_host, key="w", comm=comm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the once-per-path note that the path runs in host memory
            got = mpicoll.compressed_allreduce(gpu.asarray(x), on_gpu, key="w", comm=comm)
        assert isinstance(got, StandInGpuArray), type(got)
        assert got.shape == x.shape and got.dtype == x.dtype
        assert_equal_all(comm.mpi, got.get(), want, f"{codec} step {step}")


def test_a_host_path_warns_once(comm, gpu):
    from mpicoll.aggregation import api

    api._warned_host_paths.discard("allgather_decode")
    codec = compression.get("qsgd")
    x = gpu.asarray(rank_input(100, comm.rank, "float32"))
    with pytest.warns(UserWarning, match="runs in host memory"):
        mpicoll.compressed_allreduce(x, codec, comm=comm, algorithm="allgather_decode")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mpicoll.compressed_allreduce(x, codec, comm=comm, algorithm="allgather_decode")
