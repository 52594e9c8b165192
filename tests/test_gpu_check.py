"""The prepared GPU check script runs here as a dry run (Numba-CUDA under the simulator)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from launch import ROOT

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "-m", "mpicoll.bench.gpu_check", "--dry-run", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    numba_rows = [r for r in report["kernels"] if r["provider"] == "numba-cuda"]
    from mpicoll.kernels import reference

    assert {r["op"] for r in numba_rows} == {*reference.OPS, "quantize_stochastic"}, numba_rows  # every kernel
    assert all(r["bitwise"] for r in numba_rows), numba_rows
    assert any(r["provider"] == "cupy" for r in report["kernels"])  # present, or unavailable with a reason
    assert "compressed_allreduce topk (host)" in json.dumps(report["collectives"])
    assert done.stdout.strip().splitlines()[-1].startswith("# collectives:")  # the table comes last
