"""Launching real MPI jobs from pytest, bounded by timeouts.

Uses the ``mpiexec`` of the running virtualenv (``sys.prefix/bin``), MPICH or Open MPI, whichever
MPI wheel is installed there. A launch that does not finish within its timeout is killed (its
whole process group) and reported with its output and any stacks the ranks dumped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MPIEXEC = Path(sys.prefix) / "bin" / "mpiexec"
LAUNCH_TIMEOUT = float(os.environ.get("PYTEST_MPI_LAUNCH_TIMEOUT", "900"))


def mpi_env(dump_dir: Path) -> dict[str, str]:
    """Environment for the ranks; Open MPI needs its run-as-root and oversubscribe switches here."""
    env = dict(os.environ, PYTEST_MPI="1", PYTHONFAULTHANDLER="1", PYTEST_MPI_DUMP_DIR=str(dump_dir),
               PYTEST_MPI_TIMEOUT=str(LAUNCH_TIMEOUT - 30))
    env.pop("MPICOLL_VALIDATE", None)
    version = subprocess.run([str(MPIEXEC), "--version"], capture_output=True, text=True, timeout=30)
    if "Open MPI" in version.stdout + version.stderr or "OpenRTE" in version.stdout:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe",
                   OMPI_MCA_mpi_yield_when_idle="1")
    return env


def stacks(dump_dir: Path) -> str:
    """The Python stacks ranks dumped when a hang was detected (empty if none)."""
    parts = []
    for path in sorted(dump_dir.glob("stack-rank*.txt")):
        text = path.read_text(errors="replace").strip()
        if text:
            parts.append(f"--- {path.stem} ---\n{text[-6000:]}")
    return "\n".join(parts)


def run_ranks(nranks: int, args: list[str], dump_dir: Path, timeout: float = LAUNCH_TIMEOUT,
              extra_env: dict[str, str] | None = None, mpi4py_runner: bool = True) -> subprocess.CompletedProcess:
    """``mpiexec -n nranks python [-m mpi4py] <args>``, killed (whole process group) after ``timeout``."""
    if not MPIEXEC.exists():
        pytest.fail(f"no mpiexec in {MPIEXEC.parent}: install an MPI wheel, e.g. pip install -e '.[mpich,test]'")
    cmd = [str(MPIEXEC), "-n", str(nranks), sys.executable, *(["-m", "mpi4py"] if mpi4py_runner else []), *args]
    env = {**mpi_env(dump_dir), **(extra_env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout:.0f} s and was killed; output:\n"
                    f"{out[-20000:]}\n{stacks(dump_dir)}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")
