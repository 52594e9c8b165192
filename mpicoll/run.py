"""``python -m mpicoll.run``: run one MPI rank of a program, and say which rank died if it dies.

Use it where you would use ``python -m mpi4py``::

    mpiexec -n 4 python -m mpicoll.run train.py --epochs 10
    srun --mpi=pmi2 python -m mpicoll.run -m mpicoll.bench allreduce

The program runs as a child process under ``python -m mpi4py`` (so an uncaught exception aborts
every rank at once). This parent process never initializes MPI; it only watches the child. If
the child is killed by a signal (out of memory, a segmentation fault, ``kill -9``), the parent
writes one line naming the rank, its pid and host and the signal, then exits non-zero so that
the launcher tears the job down. MPICH's launcher alone reports only the pid of a dead process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def launcher_rank() -> str:
    """This process's rank as the launcher announced it in the environment, or ``"?"``."""
    return next((os.environ[v] for v in _RANK_VARIABLES if v in os.environ), "?")


def main(argv: list[str]) -> int:
    """Run ``python -m mpi4py <argv>`` as a child and report its death by signal."""
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__.split("\n\n")[0] + "\nusage: python -m mpicoll.run [-m module | script] [args...]\n")
        return 0 if argv else 2
    # close_fds=False: the launcher talks to the rank over inherited descriptors (PMI_FD, PMIx sockets)
    child = subprocess.Popen([sys.executable, "-m", "mpi4py", *argv], close_fds=False)
    forwarded: list[int] = []

    def forward(signum: int, frame: object) -> None:
        forwarded.append(signum)  # the launcher is stopping us: not a failure of this rank
        child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, forward)
    code = child.wait()
    if code < 0 and -code not in forwarded:
        name = signal.Signals(-code).name
        sys.stderr.write(f"mpicoll.run: rank {launcher_rank()} (pid {child.pid} on {socket.gethostname()}) was "
                         f"killed by {name}; the other ranks will be stopped by the launcher\n")
        sys.stderr.flush()
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
