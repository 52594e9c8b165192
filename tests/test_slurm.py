"""The job scripts in jobs/ run as real Slurm batch jobs on a local single-node Slurm.

Skipped with the reason where Slurm is not installed (CI installs it: see .ci/run).
"""

from __future__ import annotations

import json
import sys

import pytest
from launch import ROOT
from slurm_local import LocalSlurm, available

ok, why = available()
pytestmark = pytest.mark.skipif(not ok, reason=why)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with LocalSlurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def submit(slurm: LocalSlurm, script: str, tmp_path, **env: str) -> tuple[dict, str]:
    out, log = tmp_path / "result.json", tmp_path / "job.out"
    job = slurm.sbatch(ROOT / "jobs" / script, f"--output={log}", cwd=ROOT,
                       env={"JOB_PYTHON": sys.executable, "JOB_OUT": str(out), **env})
    fields = slurm.wait(job, timeout=600)
    text = log.read_text() if log.exists() else ""
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", (fields, text, slurm.logs())
    assert "is not an mpicoll setting" not in text, text  # the scripts' own knobs are JOB_*, not MPICOLL_*
    return json.loads(out.read_text()), text


def test_benchmark_job(slurm, tmp_path):
    document, log = submit(slurm, "bench.sbatch", tmp_path, JOB_MINBYTES="4K", JOB_MAXBYTES="64K")
    assert "launched by   launcher=srun" in log and "slurm_job_id=" in log and "ranks         2" in log, log
    assert document["meta"]["nranks"] == 2
    rows = document["results"]
    assert {r["size_bytes"] for r in rows} == {4096, 16384, 65536}
    assert all(r["wrong"] == 0 for r in rows)


def test_training_job(slurm, tmp_path):
    history, log = submit(slurm, "train.sbatch", tmp_path, JOB_EPOCHS="3")
    assert history["ranks"] == 2 and history["identical"] is True
    assert len(history["history"]) == 3 and history["history"][-1]["test_accuracy"] > 0.5
    assert "weights identical on all 2 ranks: True" in log
