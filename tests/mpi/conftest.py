"""Runs inside every rank of ``mpiexec -n N python -m mpi4py -m pytest tests/mpi``.

- Each test's verdict is agreed by all ranks: a test that fails on one rank fails on all.
- A rank whose test finished while others did not arrive within ``AGREE_TIMEOUT`` seconds
  makes every rank print its Python stack (so the log shows where each was stuck) and aborts
  the job: a hang becomes a failure within seconds, never a CI timeout.
- A session-wide timer (``PYTEST_MPI_TIMEOUT``) dumps all stacks and exits as a backstop.

Stacks go to ``$PYTEST_MPI_DUMP_DIR/stack-rank<R>.txt`` (pytest captures stderr while a test
runs, so a stuck rank could not print them); the launcher shows those files on failure.

Fixtures: ``comm``, one :class:`mpicoll.Comm` (a private ``Dup()`` of the world) per test module;
a module that needs another (a host layout, torch's thread count) defines its own ``comm``.
Helpers (collective asserts, inputs, the torch model) are in ``tests/helpers/``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import tempfile
import time

import pytest
from mpi4py import MPI

import mpicoll

AGREE_TIMEOUT = float(os.environ.get("PYTEST_MPI_AGREE_TIMEOUT", "60"))
_VERDICTS = MPI.COMM_WORLD.Dup()
_PIDS = _VERDICTS.allgather(os.getpid())
_HOSTS = _VERDICTS.allgather(MPI.Get_processor_name())
_DUMP_DIR = os.environ.get("PYTEST_MPI_DUMP_DIR") or tempfile.gettempdir()
_DUMP = open(os.path.join(_DUMP_DIR, f"stack-rank{_VERDICTS.Get_rank()}.txt"), "w")  # noqa: SIM115


def pytest_configure(config: pytest.Config) -> None:
    faulthandler.register(signal.SIGUSR1, file=_DUMP, all_threads=True)
    timeout = float(os.environ.get("PYTEST_MPI_TIMEOUT", "0"))
    if timeout > 0:
        faulthandler.dump_traceback_later(timeout, exit=True, file=_DUMP)
    if _VERDICTS.Get_rank() != 0:
        config.option.verbose = -1
    from hypothesis import HealthCheck, settings

    # Every rank must draw the same examples in the same order: no randomness, no database,
    # nothing that depends on timing.
    settings.register_profile("mpi", derandomize=True, database=None, deadline=None, max_examples=25,
                              suppress_health_check=list(HealthCheck), print_blob=False)
    settings.load_profile("mpi")


@pytest.fixture(scope="module")
def comm():
    """A communicator of every rank for one test module, freed (collectively) at its end. In the
    torch test modules (torch already imported) torch's own thread pool is cut to one thread: the
    ranks share few cores."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    with mpicoll.Comm() as c:
        yield c


def _dump_everyone_and_abort(nodeid: str, text: str) -> None:
    me = _VERDICTS.Get_rank()
    sys.stderr.write(f"\n[rank {me}] test {nodeid} finished here but other ranks did not reach its end "
                     f"within {AGREE_TIMEOUT:.0f} s; every rank's Python stack goes to "
                     f"{_DUMP_DIR}/stack-rank<R>.txt and the job is aborted.\n{text}\n")
    sys.stderr.flush()
    for rank, pid in enumerate(_PIDS):
        if _HOSTS[rank] == _HOSTS[me]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGUSR1)
    time.sleep(1.0)
    MPI.COMM_WORLD.Abort(3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    # One agreement per test: after "call", or after a "setup" that failed or skipped (no call).
    if not (report.when == "call" or (report.when == "setup" and not report.passed)):
        return
    import numpy as np

    mine = np.array([1 if report.failed else 0], dtype=np.int64)
    total = np.zeros(1, dtype=np.int64)
    request = _VERDICTS.Iallreduce(mine, total, MPI.SUM)
    deadline = time.monotonic() + AGREE_TIMEOUT
    while not request.Test():
        if time.monotonic() > deadline:
            _dump_everyone_and_abort(item.nodeid, report.longreprtext if report.failed else "(passed here)")
        time.sleep(0.0005)
    if total[0] and report.passed:
        report.outcome = "failed"
        report.longrepr = f"failed on {int(total[0])} other rank(s); see their output"
