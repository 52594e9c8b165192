"""Top-level test configuration.

``tests/mpi`` holds size-agnostic tests that must run under ``mpiexec``; a plain ``pytest`` run
does not collect them directly but launches them from ``tests/test_mpi_suite.py`` for
N = 1..5 ranks. The launcher sets ``PYTEST_MPI=1`` for the ranks.

``tests/cudasim`` holds Numba-CUDA tests that need the CUDA simulator, which Numba reads from
``NUMBA_ENABLE_CUDASIM=1`` at import: ``tests/test_cudasim.py`` runs them in a subprocess that sets it.

``tests/helpers`` holds what the tests share (launching MPI jobs, a local Slurm, collective
asserts, a stand-in GPU, the decoder fuzzer); pyproject.toml puts it on ``sys.path``.

Every test module in the ``tests/`` root launches processes (MPI jobs under mpiexec, Slurm,
pip, a subprocess per suite) and is marked ``slow`` here, so that ``pytest -m "not slow"`` (and
``make check``) is the quick lane; single-process tests that take long carry the mark themselves.
"""

import os
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent

collect_ignore = [] if os.environ.get("PYTEST_MPI") == "1" else ["mpi"]
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore.append("cudasim")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent == _ROOT:  # a launcher in the tests/ root
            item.add_marker(pytest.mark.slow)
