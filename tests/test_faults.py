"""Faults end jobs instead of hanging them: a rank that raises, dies or stalls (real mpiexec)."""

from __future__ import annotations

import time

import pytest
from launch import run_ranks

SCRIPT = """
import os, sys, time, numpy as np, mpicoll
mode = sys.argv[1]
x = np.ones(100000, np.float32)
for step in range(100000):
    if mode == "inflight" and step == 5:  # every rank starts non-blocking collectives; rank 1 fails
        handles = [mpicoll.iallreduce(np.full(n, 1.0, np.float32)) for n in (10, 100000, 3000000, 7)]
        if mpicoll.rank() == 1:
            raise RuntimeError("injected failure with handles in flight")
        [h.wait() for h in handles]
    if mpicoll.rank() == 1 and step == 5:
        if mode == "raise":
            raise RuntimeError("injected failure at step 5")
        if mode == "kill":
            os.kill(os.getpid(), 9)
        if mode == "stall":
            time.sleep(600)
    mpicoll.allreduce(x, algorithm="ring")
"""


def launch(tmp_path, mode: str, runner: str, env: dict[str, str] | None = None) -> tuple[str, float, int]:
    script = tmp_path / "faulty.py"
    script.write_text(SCRIPT)
    args = {"plain": [str(script), mode], "mpicoll.run": ["-m", "mpicoll.run", str(script), mode],
            "mpi4py": [str(script), mode]}[runner]
    start = time.monotonic()
    result = run_ranks(3, args, tmp_path, timeout=60, extra_env=env, mpi4py_runner=runner == "mpi4py")
    return result.stdout, time.monotonic() - start, result.returncode


@pytest.mark.parametrize("runner", ["plain", "mpi4py", "mpicoll.run"])
def test_a_rank_that_raises_ends_the_job(tmp_path, runner):
    out, seconds, code = launch(tmp_path, "raise", runner)
    assert code != 0 and seconds < 10, (seconds, out)
    assert "injected failure at step 5" in out
    if runner == "plain":  # mpicoll's own hook; mpi4py's runner prints the traceback itself
        assert "mpicoll: rank 1 of 3 raised an uncaught exception; aborting all ranks" in out


@pytest.mark.parametrize("runner", ["plain", "mpicoll.run"])
def test_a_rank_that_raises_with_handles_in_flight_ends_the_job(tmp_path, runner):
    out, seconds, code = launch(tmp_path, "inflight", runner)
    assert code != 0 and seconds < 10, (seconds, out)
    assert "injected failure with handles in flight" in out, out


def test_a_rank_that_dies_is_named(tmp_path):
    out, seconds, code = launch(tmp_path, "kill", "mpicoll.run")
    assert code != 0 and seconds < 10, (seconds, out)
    assert "mpicoll.run: rank 1 (pid" in out and "killed by SIGKILL" in out, out


@pytest.mark.parametrize("validate", ["0", "1"])
def test_the_watchdog_names_the_stalled_collective(tmp_path, validate):
    out, seconds, code = launch(tmp_path, "stall", "mpicoll.run",
                                {"MPICOLL_TIMEOUT": "2", "MPICOLL_VALIDATE": validate})
    assert code != 0 and seconds < 15, (seconds, out)
    assert "mpicoll watchdog: rank" in out and "in allreduce (ring" in out, (code, seconds, out)
    if validate == "0":
        assert "for rank 1" in out, out  # the ranks next to the stalled one name it
    else:
        assert "argument check" in out, out  # everyone waits in the check for whoever is missing
