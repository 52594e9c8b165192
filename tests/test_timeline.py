"""The timeline under real mpiexec: a training job records one merged trace; summarize and plot read it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from launch import ROOT, run_ranks

pytest.importorskip("torch")

STEPS, LATE_STEP, LATE_RANK = 4, 2, 2

JOB = textwrap.dedent(f"""
    import time
    import torch
    import mpicoll
    import mpicoll.torch as mt
    from mpicoll import compression

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 5))
    mt.broadcast_parameters(net, root=0)  # as every script does (this first collective starts the recording)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    opt = mt.DistributedOptimizer(opt, net.named_parameters(), bucket_bytes=16 << 10,
                                  compressor=compression.ErrorFeedback(compression.get("topk", ratio=0.05)))
    g = torch.Generator().manual_seed(mpicoll.rank())
    for step in range({STEPS}):
        x, y = torch.randn(8, 20, generator=g), torch.randint(0, 5, (8,), generator=g)
        opt.zero_grad()
        if step == {LATE_STEP} and mpicoll.rank() == {LATE_RANK}:
            time.sleep(1.0)  # a straggler: every bucket of this step starts late on this rank
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    print("buckets", len(opt.buckets.buckets), flush=True)
""")


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("timeline")
    script, path = tmp / "job.py", tmp / "trace.json"
    script.write_text(JOB)
    result = run_ranks(3, [str(script)], tmp, timeout=600, extra_env={"MPICOLL_TIMELINE": str(path)})
    assert result.returncode == 0, result.stdout
    buckets = int(result.stdout.split("buckets")[-1].split()[0])
    assert not list(tmp.glob("trace.json.rank*")), "per-rank files are only for jobs that die"
    return json.loads(path.read_text()), buckets, path


def _within(inner: dict, outer: dict) -> bool:
    return (inner["pid"], inner["tid"]) == (outer["pid"], outer["tid"]) and \
        outer["ts"] <= inner["ts"] and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"] + 1e-3


def test_trace_covers_every_bucket_of_every_step_on_every_rank(trace):
    document, nbuckets, _ = trace
    assert nbuckets >= 2
    events = document["traceEvents"]
    assert document["otherData"]["ranks"] == 3 and document["otherData"]["dropped_events"] == 0
    every = {(r, s, b) for r in range(3) for s in range(STEPS) for b in range(nbuckets)}
    for phase in ("X", "i"):  # launch-to-done spans, and the moments the buckets became ready
        seen = {(e["pid"], e["args"]["step"], e["args"]["bucket"]) for e in events
                if e.get("cat") == "bucket" and e["ph"] == phase}
        assert seen == every, phase
    compressed = [e for e in events if e.get("cat") == "collective" and e["name"] == "compressed_allreduce"]
    assert len(compressed) == 3 * STEPS * nbuckets
    for c in compressed:  # compress, wire (of the inner gathers) and decode nested in their collective
        inside = {e["name"] for e in events if e.get("cat") == "phase" and _within(e, c)}
        assert {"agreement", "compress", "exchange", "wire", "decode"} <= inside, inside
        assert c["args"]["algorithm"] == "sparse_allgather" and c["args"]["bytes"] > 0
    queue = [e for e in events if e.get("cat") == "queue"]
    assert len(queue) == 3 * STEPS * nbuckets and all(e["dur"] >= 0 for e in queue)


def test_summarize_names_the_late_rank(trace):
    _, _, path = trace
    out = path.with_name("summary.json")
    result = subprocess.run([sys.executable, "-m", "mpicoll.bench", "timeline", "summarize", str(path), "--json",
                             str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    top = summary["stragglers"]["ranks"][0]
    assert top["rank"] == LATE_RANK and top["max_late_ms"] > 500, summary["stragglers"]
    assert f"rank {LATE_RANK} kept the others waiting longest" in result.stdout
    names = {row["name"] for row in summary["tables"]["phase"]}
    assert {"compressed_allreduce / compress", "exchange / decode", "allgather / wire"} <= names


def test_plot_writes_a_png(trace):
    _, _, path = trace
    png = path.with_name("step.png")
    result = subprocess.run([sys.executable, "-m", "mpicoll.bench", "timeline", "plot", str(path), "-o", str(png)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_dying_job_leaves_per_rank_files(tmp_path):
    script = tmp_path / "die.py"
    script.write_text(textwrap.dedent("""
        import numpy as np, mpicoll
        mpicoll.allreduce(np.ones(10))
        if mpicoll.rank() == 1:
            raise RuntimeError("boom")
        mpicoll.allreduce(np.ones(10))
    """))
    path = tmp_path / "trace.json"
    result = run_ranks(2, [str(script)], tmp_path, timeout=300, extra_env={"MPICOLL_TIMELINE": str(path)},
                       mpi4py_runner=False)
    assert result.returncode != 0
    kept = json.loads((tmp_path / "trace.json.rank1.json").read_text())["traceEvents"]
    assert any(e.get("cat") == "collective" and e["name"] == "allreduce" for e in kept)


DDP_JOB = textwrap.dedent("""
    import torch
    import torch.distributed as dist
    import mpicoll.torch as mt
    from mpicoll import compression

    torch.manual_seed(0)
    torch.set_num_threads(1)
    dist.init_process_group("mpicoll")
    net = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 5))
    ddp = torch.nn.parallel.DistributedDataParallel(net, bucket_cap_mb=0.004)
    ddp.register_comm_hook(mt.HookState(compression.get("fp16")), mt.allreduce_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(dist.get_rank())
    for step in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ddp(torch.randn(8, 20, generator=g)), torch.randint(0, 5, (8,),
                                          generator=g)).backward()
        opt.step()
    dist.destroy_process_group()
""")


def test_ddp_hook_buckets_are_recorded(tmp_path):
    script, path = tmp_path / "ddp.py", tmp_path / "trace.json"
    script.write_text(DDP_JOB)
    result = run_ranks(2, [str(script)], tmp_path, timeout=600, extra_env={"MPICOLL_TIMELINE": str(path)})
    assert result.returncode == 0, result.stdout
    events = json.loads(path.read_text())["traceEvents"]
    spans = {(e["pid"], e["args"]["step"]) for e in events if e.get("cat") == "bucket" and e["ph"] == "X"}
    assert spans == {(r, s) for r in range(2) for s in range(3)}
    assert all(e["args"]["ddp"] for e in events if e.get("cat") == "bucket" and e["ph"] == "X")
