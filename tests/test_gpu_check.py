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

    # every kernel, plus the second quantize (stochastic) and the one-scale sign_pack (long blocks)
    assert {r["op"] for r in numba_rows} == {*reference.OPS, "quantize_stochastic", "sign_pack_one_scale"}, numba_rows
    assert all(r["bitwise"] and r["small_sizes"] == "all bitwise" for r in numba_rows), numba_rows
    assert any(r["provider"] == "cupy" for r in report["kernels"])  # present, or unavailable with a reason
    verdicts = dict(report["collectives"])  # the two-rank part on host stand-ins: every item must pass
    assert verdicts["compressed_allreduce topk+ef: GPU equals host"] is True, verdicts
    assert verdicts["torch OneBitAdam on CUDA: parameters equal on both ranks"] is True, verdicts
    assert all(v is True or v == 0.0 for v in verdicts.values()), verdicts
    rates = report["codec_rates"]["codecs"]  # the cost model's numbers, one entry per probed codec
    assert {"fp16", "sign", "topk", "powersgd"} <= set(rates) and all("compress_Bps" in r for r in rates.values())
    assert done.stdout.strip().splitlines()[-1].startswith("# collectives:")  # the table comes last
