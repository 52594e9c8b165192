"""``mpicoll-bench torch-step`` runs its variants, DDP on the mpicoll backend among them (a tiny
model: this checks that every column is produced, not how fast anything is)."""

from __future__ import annotations

import json

import pytest
from launch import run_ranks

pytest.importorskip("torch")


def test_torch_step_has_a_ddp_on_mpicoll_column(tmp_path):
    out = tmp_path / "step.json"
    result = run_ranks(2, ["-m", "mpicoll.bench", "torch-step", "--hidden", "16", "--layers", "1", "--steps", "1",
                           "--rounds", "1", "--json", str(out)], tmp_path, timeout=300, mpi4py_runner=False)
    assert result.returncode == 0, result.stdout[-4000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"ddp-gloo", "ddp-on-mpicoll", "ddp-mpicoll", "optimizer"}
    assert all(r["ms_per_step"] > 0 for r in rows.values())


def test_torch_step_measures_each_compressor_and_auto_side_by_side(tmp_path):
    out = tmp_path / "step.json"
    result = run_ranks(2, ["-m", "mpicoll.bench", "torch-step", "--hidden", "16", "--layers", "1", "--steps", "1",
                           "--rounds", "1", "--compressor", "none,fp16,auto", "--only", "optimizer",
                           "--json", str(out)], tmp_path, timeout=300, mpi4py_runner=False)
    assert result.returncode == 0, result.stdout[-4000:]
    rows = {r["variant"] for r in json.loads(out.read_text())["results"]}
    assert rows == {"ddp-gloo", "optimizer", "optimizer fp16", "optimizer auto"}
