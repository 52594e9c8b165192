"""Run ``tests/mpi`` under real ``mpiexec -n N`` for N = 1..5, bounded by timeouts.

A rank that hangs turns into a failure whose output shows every rank's Python stack (see
tests/mpi/conftest.py); the launch itself is killed after ``LAUNCH_TIMEOUT`` seconds as a last resort.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from launch import run_ranks, stacks


@pytest.mark.parametrize("nranks", [1, 2, 3, 4, 5])
def test_mpi_suite(nranks: int, tmp_path: Path) -> None:
    result = run_ranks(nranks, ["-m", "pytest", "tests/mpi", "-p", "no:cacheprovider", "-q", "-rfE"], tmp_path)
    tail = result.stdout[-30000:] + "\n" + stacks(tmp_path)
    assert result.returncode == 0, f"tests/mpi failed under mpiexec -n {nranks}:\n{tail}"
    assert " passed" in result.stdout and " failed" not in result.stdout, tail
