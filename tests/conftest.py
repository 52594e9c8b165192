"""Top-level test configuration.

``tests/mpi`` holds size-agnostic tests that must run under ``mpiexec``; a plain ``pytest`` run
does not collect them directly but launches them from ``tests/test_mpi_suite.py`` for
N = 1..5 ranks. The launcher sets ``PYTEST_MPI=1`` for the ranks.

``tests/cudasim`` holds Numba-CUDA tests that need the CUDA simulator, which Numba reads from
``NUMBA_ENABLE_CUDASIM=1`` at import: ``tests/test_cudasim.py`` runs them in a subprocess that sets it.
"""

import os

collect_ignore = [] if os.environ.get("PYTEST_MPI") == "1" else ["mpi"]
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore.append("cudasim")
