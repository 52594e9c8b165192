"""``python -m mpicoll.run``: run one MPI rank of a program, and say which rank died if it dies.

Use it where you would use ``python -m mpi4py``::

    mpiexec -n 4 python -m mpicoll.run train.py --epochs 10
    srun --mpi=pmi2 python -m mpicoll.run -m mpicoll.bench allreduce

The program runs as a child process under ``python -m mpi4py`` (so an uncaught exception aborts
every rank at once). This parent process never initializes MPI; it only watches the child. If
the child is killed by a signal (out of memory, a segmentation fault, ``kill -9``), the parent
writes one line naming the rank, its pid and host and the signal, then exits non-zero so that
the launcher tears the job down. MPICH's launcher alone reports only the pid of a dead process.
A child that is stopped (SIGSTOP, SIGTSTP) is named at once, since a stopped rank cannot name
itself. The child dies with this process even if this one is killed with SIGKILL, so that no
orphaned rank keeps the launcher waiting.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys

_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def launcher_rank() -> str:
    """This process's rank as the launcher announced it in the environment, or ``"?"``."""
    return next((os.environ[v] for v in _RANK_VARIABLES if v in os.environ), "?")


def _die_with_parent(parent: int) -> None:
    """In the child, before it execs: have the kernel SIGKILL it when this process dies, however it
    dies (SIGKILL included), so that no orphaned rank keeps the launcher's pipes open (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to arm
        return
    if os.getppid() != parent:  # the parent died before the prctl: follow it now
        os._exit(1)


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def main(argv: list[str]) -> int:
    """Run ``python -m mpi4py <argv>`` as a child and report its death by signal, or its stopping."""
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__.split("\n\n")[0] + "\nusage: python -m mpicoll.run [-m module | script] [args...]\n")
        return 0 if argv else 2
    parent = os.getpid()
    # close_fds=False: the launcher talks to the rank over inherited descriptors (PMI_FD, PMIx sockets)
    child = subprocess.Popen([sys.executable, "-m", "mpi4py", *argv], close_fds=False,
                             preexec_fn=lambda: _die_with_parent(parent))
    forwarded: list[int] = []
    who = f"rank {launcher_rank()} (pid {child.pid} on {socket.gethostname()})"

    def forward(signum: int, frame: object) -> None:
        forwarded.append(signum)  # the launcher is stopping us: not a failure of this rank
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)
            os.kill(child.pid, signal.SIGCONT)  # a stopped rank must run to act on it

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, forward)
    while True:
        _, status = os.waitpid(child.pid, os.WUNTRACED | os.WCONTINUED)
        if os.WIFSTOPPED(status):
            _say(f"mpicoll.run: {who} was stopped by {signal.Signals(os.WSTOPSIG(status)).name}; the other ranks "
                 f"wait for it (MPICOLL_TIMEOUT ends the job); kill -CONT {child.pid} resumes it")
        elif os.WIFCONTINUED(status):
            _say(f"mpicoll.run: {who} continues")
        else:
            break
    code = os.waitstatus_to_exitcode(status)
    child.returncode = code
    if code < 0 and -code not in forwarded:
        _say(f"mpicoll.run: {who} was killed by {signal.Signals(-code).name}; the other ranks will be stopped by "
             f"the launcher")
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
