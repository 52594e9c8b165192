"""Run ``tests/cudasim`` (the Numba-CUDA provider's parity tests) under the CUDA simulator.

The simulator must be switched on before Numba is imported, so the suite runs in a subprocess
with ``NUMBA_ENABLE_CUDASIM=1``, bounded by a timeout.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600


def _text(stream: str | bytes | None) -> str:
    return stream.decode(errors="replace") if isinstance(stream, bytes) else stream or ""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed")
def test_cudasim_suite() -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    command = [sys.executable, "-m", "pytest", "tests/cudasim", "-q", "-p", "no:cacheprovider"]
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout)[-30000:] + "\n" + _text(exc.stderr)[-5000:]
        pytest.fail(f"tests/cudasim timed out after {TIMEOUT} s:\n{output}")
    output = (done.stdout + "\n" + done.stderr)[-30000:]
    assert done.returncode == 0, f"tests/cudasim failed under the CUDA simulator:\n{output}"
    assert " passed" in done.stdout, output
