"""Faults end jobs instead of hanging them: a rank that raises, dies or stalls (real mpiexec).

"Ends instead of hanging" is asserted by the launch's own bound: ``run_ranks`` kills a job that
outlives its timeout and fails the test with its output. No test asserts how many seconds the
ending took (a loaded machine must not fail a test); ``seconds`` only goes into the messages."""

from __future__ import annotations

import time
from pathlib import Path

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
    assert code != 0, (seconds, out)
    assert "injected failure at step 5" in out
    if runner == "plain":  # mpicoll's own hook; mpi4py's runner prints the traceback itself
        assert "mpicoll: rank 1 of 3 raised an uncaught exception; aborting all ranks" in out


@pytest.mark.parametrize("runner", ["plain", "mpicoll.run"])
def test_a_rank_that_raises_with_handles_in_flight_ends_the_job(tmp_path, runner):
    out, seconds, code = launch(tmp_path, "inflight", runner)
    assert code != 0, (seconds, out)
    assert "injected failure with handles in flight" in out, out


def test_a_rank_that_dies_is_named(tmp_path):
    out, seconds, code = launch(tmp_path, "kill", "mpicoll.run")
    assert code != 0, (seconds, out)
    assert "mpicoll.run: rank 1 (pid" in out and "killed by SIGKILL" in out, out


@pytest.mark.parametrize("validate", ["0", "1"])
def test_the_watchdog_names_the_stalled_collective(tmp_path, validate):
    out, seconds, code = launch(tmp_path, "stall", "mpicoll.run",
                                {"MPICOLL_TIMEOUT": "2", "MPICOLL_VALIDATE": validate})
    assert code != 0, (seconds, out)
    assert "mpicoll watchdog: rank" in out and "in allreduce (ring" in out, (code, seconds, out)
    if validate == "0":
        assert "for rank 1" in out, out  # the ranks next to the stalled one name it
    else:
        assert "argument check" in out, out  # everyone waits in the check for whoever is missing


# ---------------------------------------------------------------- issue 13: hangs the watchdog missed

FIRST = """
import os, signal, sys, time, numpy as np, mpicoll
from mpicoll import compression
mode, rank = sys.argv[1], int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
comm = None
if rank == 1 and mode == "raise-first":
    raise RuntimeError("rank 1 fails before its first collective")
if rank == 1 and mode == "stall-first":
    time.sleep(25)
if rank == 1 and mode == "other-comm":
    from mpi4py import MPI
    comm = MPI.COMM_SELF
codec = compression.get("none")  # no kernels to compile: the first call is quick
if mode == "pids":
    with open(sys.argv[2] + f"/pids-{rank}", "w") as f:
        f.write(f"{os.getpid()} {os.getppid()}")
x = np.ones(100000, np.float32)
for step in range(1000000):
    if rank == 1 and mode == "stop" and step == 5:
        os.kill(os.getpid(), signal.SIGSTOP)
    if mode == "stall-decode":
        if rank == 1 and step == 1:  # stalls inside compressed_allreduce, after every wait so far
            real = codec.decompress
            codec.decompress = lambda payload, ctx, **kw: (time.sleep(600), real(payload, ctx, **kw))[1]
        mpicoll.compressed_allreduce(x, codec, algorithm="two_phase")
    else:
        mpicoll.allreduce(x, algorithm="ring", comm=comm)
"""


def launch_first(tmp_path, mode: str, runner: str = "plain", timeout: float = 90) -> tuple[str, float, int]:
    script = tmp_path / "first.py"
    script.write_text(FIRST)
    args = [str(script), mode] if runner == "plain" else ["-m", "mpicoll.run", str(script), mode]
    start = time.monotonic()
    result = run_ranks(3, args, tmp_path, timeout=timeout, extra_env={"MPICOLL_TIMEOUT": "10"}, mpi4py_runner=False)
    return result.stdout, time.monotonic() - start, result.returncode


@pytest.mark.parametrize("mode", ["raise-first", "stall-first", "other-comm"])
def test_the_watchdog_covers_the_first_collective(tmp_path, mode):
    """Break 11: a rank that raised before its first collective, stalled, or passed another
    communicator on its first call left the others waiting (in the collective Dup() that makes the
    default communicator) even with MPICOLL_TIMEOUT set."""
    out, seconds, code = launch_first(tmp_path, mode)
    assert code != 0, (code, seconds, out)
    if mode == "other-comm":
        assert "mpicoll watchdog: rank 0" in out and "creating the communicator" in out, out
    elif mode == "raise-first" and "exited with non-zero status" in out:
        # Open MPI's launcher ends the whole job itself as soon as one process exits non-zero,
        # before the others' timer fires: the job ended, naming the failing rank's error
        assert "rank 1 fails before its first collective" in out, out
    else:  # the others are stuck in MPI_Init, which holds the GIL: the C-level timer ends them
        assert "Timeout (0:00:10)!" in out and "start_mpi" in out, out


def test_the_stalled_rank_says_it_is_computing(tmp_path):
    """Break 15: the stalled rank's own watchdog line named a step it had long finished (the
    argument check) and said it waited for the other ranks."""
    out, seconds, code = launch_first(tmp_path, "stall-decode")
    assert code != 0, (code, seconds, out)
    assert "rank 1 has spent" in out and "without waiting on any rank" in out, out


def test_a_stopped_rank_is_named(tmp_path):
    """Break 15: a frozen (SIGSTOP) rank was named by no message."""
    out, seconds, code = launch_first(tmp_path, "stop", runner="mpicoll.run")
    assert code != 0, (code, seconds, out)
    assert "mpicoll.run: rank 1 (pid" in out and "was stopped by SIGSTOP" in out, out


def test_a_rank_dies_with_its_killed_mpicoll_run(tmp_path):
    """Break 15: after mpicoll.run itself was SIGKILLed, its child rank lived on and held the
    launcher's pipes (mpiexec once ignored SIGTERM for over 10 minutes)."""
    import os
    import signal
    import subprocess
    import sys

    from launch import MPIEXEC, mpi_env

    script = tmp_path / "first.py"
    script.write_text(FIRST)
    env = {**mpi_env(tmp_path), "MPICOLL_TIMEOUT": "0"}
    proc = subprocess.Popen([str(MPIEXEC), "-n", "2", sys.executable, "-m", "mpicoll.run", str(script), "pids",
                             str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "pids-1").exists() or not (tmp_path / "pids-1").read_text().strip():
            assert time.monotonic() < deadline and proc.poll() is None, "the ranks never started"
            time.sleep(0.2)
        child, parent = (int(v) for v in (tmp_path / "pids-1").read_text().split())
        os.kill(parent, signal.SIGKILL)
        deadline = time.monotonic() + 10
        status = Path(f"/proc/{child}/status")
        while status.exists() and "zombie" not in status.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the rank outlived its mpicoll.run"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)  # the launcher ends: nothing holds its pipes
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


ABORT_RETURNS = """
import sys, time, types
import mpi4py
fake = types.ModuleType("mpi4py.MPI")
class World:
    def Abort(self, code):  # behind a cut link MPI_Abort returned (or never returned)
        if sys.argv[1] == "hangs":
            time.sleep(60)
fake.COMM_WORLD = World()
sys.modules["mpi4py.MPI"] = mpi4py.MPI = fake
from mpicoll.transport import watchdog
watchdog.ABORT_GRACE = 2.0
watchdog._abort(124)
print("still alive after the abort")
"""


@pytest.mark.parametrize("behaviour", ["returns", "hangs"])
def test_the_watchdog_exits_for_sure_after_mpi_abort(behaviour):
    """Break 14: behind a cut link MPI_Abort returned and the watchdog retried it every 0.55 s forever,
    the rank staying alive at 100% CPU."""
    import subprocess
    import sys

    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", ABORT_RETURNS, behaviour], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 124 and "still alive" not in result.stdout, result
    assert time.monotonic() - start < 15
