"""Command lines under real mpiexec: `python -m mpicoll info`, the benchmark suite, and `tune`."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from launch import ROOT, run_ranks

REQUIRED = {"collective", "algorithm", "nranks", "size_bytes", "count", "dtype", "op", "time_us", "algbw_GBps",
            "busbw_GBps", "wrong", "mpi_library"}


def test_info_singleton():
    out = subprocess.run([sys.executable, "-m", "mpicoll", "info"], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for text in ("MPI library", "thread level", "ranks         1", "singleton", "numpy       cpu   yes",
                 "CUDA-aware", "segment_bytes", "auto table"):
        assert text in out.stdout, (text, out.stdout)


def test_info_under_mpiexec_json(tmp_path):
    result = run_ranks(3, ["-m", "mpicoll", "info", "--json"], tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)  # rank 0 prints, the others do not
    assert report["ranks"] == 3 and report["hosts"] == 1
    assert sum(report["ranks_per_host"].values()) == 3
    assert "mpiexec" in report["launch"]["launcher"]
    assert report["python_m_mpi4py"] is True
    assert report["thread_level"].startswith("MPI_THREAD_")
    providers = {p["name"]: p for p in report["kernel_providers"]}
    assert providers["numpy"]["available"] and set(providers) == {"numpy", "numba-cpu", "numba-cuda", "cupy"}
    assert all(p["reason"] for p in providers.values())


def test_allreduce_bench_json(tmp_path):
    out = tmp_path / "out.json"
    algos = "ring,tree,recursive_doubling,rabenseifner,native,auto"
    result = run_ranks(3, ["-m", "mpicoll.bench", "allreduce", "-b", "1K", "-e", "64K", "-f", "8", "-n", "3", "-w",
                           "1", "--repeats", "1", "--algo", algos, "--json", str(out)], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "#wrong" in result.stdout and "out of bounds values : 0 OK" in result.stdout
    document = json.loads(out.read_text())
    assert document["meta"]["nranks"] == 3 and "mpiexec" not in document["meta"]["mpi_library"]
    rows = document["results"]
    assert {r["algorithm"] for r in rows} == {*algos.split(","), "sendrecv"}
    assert {r["size_bytes"] for r in rows} == {1024, 8192, 65536}
    for r in rows:
        assert set(r) >= REQUIRED, set(r)
        assert r["wrong"] == 0 and r["time_us"] > 0 and r["nranks"] == 3
        if r["collective"] == "allreduce":
            assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * 4 / 3)


def test_stats_columns_and_json(tmp_path):
    out = tmp_path / "out.json"
    result = run_ranks(2, ["-m", "mpicoll.bench", "allreduce", "-b", "4K", "-e", "4K", "-n", "20", "-w", "1",
                           "--repeats", "2", "--algo", "ring", "--no-ceiling", "--stats", "--json", str(out)],
                       tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "p95" in result.stdout and "spread" in result.stdout
    (row,) = json.loads(out.read_text())["results"]
    stats = row["iter_us"]
    assert set(stats) == {"min", "p50", "p95", "p99", "max"} and row["spread_pct"] >= 0
    assert stats["min"] <= stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"]  # order, not values


def test_check_cost_times_unchecked_twins_in_the_same_run(tmp_path):
    """``--check-cost``: each algorithm also as ``NAME:unchecked`` (the argument check off around
    its loop), the bare baseline only once; every row's result is checked (0 wrong)."""
    out = tmp_path / "out.json"
    result = run_ranks(2, ["-m", "mpicoll.bench", "allreduce", "-b", "4K", "-e", "64K", "-f", "16", "-n", "5",
                           "-w", "1", "--repeats", "2", "--algo", "auto,ring,MPI_Allreduce", "--no-ceiling",
                           "--check-cost", "--json", str(out)], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout
    rows = json.loads(out.read_text())["results"]
    names = {r["algorithm"] for r in rows}
    assert names == {"auto", "ring", "MPI_Allreduce", "auto:unchecked", "ring:unchecked"}, names
    assert all(r["wrong"] == 0 for r in rows) and len(rows) == 2 * len(names)


@pytest.mark.parametrize("collective", ["reduce_scatter", "allgather", "broadcast", "reduce"])
def test_other_collective_benches(tmp_path, collective):
    result = run_ranks(2, ["-m", "mpicoll.bench", collective, "-b", "4K", "-e", "16K", "-n", "2", "-w", "1",
                           "--repeats", "1", "--no-ceiling"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "out of bounds values : 0 OK" in result.stdout and collective in result.stdout


def test_tune_writes_the_table_auto_reads(tmp_path):
    table = tmp_path / "table.json"
    result = run_ranks(2, ["-m", "mpicoll.bench", "tune", "-b", "1K", "-e", "16K", "-f", "4", "-n", "2", "-w", "1",
                           "--repeats", "1", "--out", str(table)], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout
    rules = json.loads(table.read_text())["allreduce"]["2"]
    assert rules[-1][0] is None
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, sys, mpicoll\n"
        "from mpicoll.collectives import auto\n"
        "rules = json.load(open(sys.argv[1]))['allreduce']['2']\n"
        "for size in (1024, 4096, 16384, 1 << 30):\n"
        "    want = next(a for limit, a in rules if limit is None or size <= limit)\n"
        "    assert auto.choose('allreduce', size, mpicoll.size()) == want, (size, want)\n"
        "print('auto follows the tuned table')\n")
    env_result = run_ranks(2, [str(probe), str(table)], tmp_path, timeout=120,
                           extra_env={"MPICOLL_AUTO_TABLE": str(table)})
    assert env_result.returncode == 0 and "auto follows the tuned table" in env_result.stdout, env_result.stdout


def test_bench_error_aborts_every_rank(tmp_path: Path):
    result = run_ranks(2, ["-m", "mpicoll.bench", "allreduce", "-b", "4K", "-e", "4K", "-d", "uint8"], tmp_path,
                       timeout=120)
    assert result.returncode != 0
    assert "does not accept dtype uint8" in result.stdout


def test_wrong_count_catches_an_algorithm_that_writes_nothing(tmp_path):
    script = tmp_path / "planted.py"
    script.write_text(
        "from mpicoll.collectives.registry import register\n"
        "from mpicoll.bench.harness import Options, run_case\n"
        "from mpicoll.bench.allreduce import CASE\n"
        "from mpicoll.transport import Comm\n"
        "@register('allreduce', 'noop')\n"
        "def noop(comm, sendbuf, recvbuf, op):\n"
        "    pass  # a broken algorithm: never writes its output\n"
        "comm = Comm()\n"
        "opts = Options(sizes=[4096], algorithms=['ring', 'noop'], warmup=1, iters=2, budget_s=0.01, repeats=2)\n"
        "for r in run_case(CASE, comm, opts, lambda r: None):\n"
        "    if comm.rank == 0:\n"
        "        print(r.algorithm, 'wrong', r.wrong, flush=True)\n")
    result = run_ranks(2, [str(script)], tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout
    assert "ring wrong 0" in result.stdout
    assert "noop wrong 4096" in result.stdout  # 1024 elements x 2 ranks x 2 rounds


def test_compress_bench_json(tmp_path):
    out = tmp_path / "compress.json"
    done = subprocess.run([sys.executable, "-m", "mpicoll.bench", "compress", "-s", "256K", "--repeats", "1",
                           "--budget", "0.01", "--compressors", "fp16,int8,sign,topk,randomk", "--providers",
                           "numpy,numba-cpu", "--json", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "np.copyto" in done.stdout and "vs argpart" in done.stdout
    rows = json.loads(out.read_text())["results"]
    assert {(r["compressor"], r["provider"]) for r in rows} == {
        (c, p) for c in ("fp16", "int8", "sign", "topk", "randomk") for p in ("numpy", "numba-cpu")}
    for r in rows:
        assert r["compress_GBps"] > 0 and r["decompress_GBps"] > 0 and r["copy_GBps"] > 0
        assert r["ratio"] > 1.5 and 0 <= r["rel_error"] < 1.0
    sign = next(r for r in rows if r["compressor"] == "sign")
    assert sign["ratio"] > 25  # 1 bit per element really crosses the wire


def test_osu_mode_csv_and_barrier_timing(tmp_path):
    csv_path = tmp_path / "out.csv"
    result = run_ranks(2, ["-m", "mpicoll.bench", "allreduce", "-m", "1K:4K", "-i", "3", "-x", "1", "--osu",
                           "--timing", "barrier", "--repeats", "1", "--algo", "ring,native", "--no-ceiling",
                           "--csv", str(csv_path)], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "# OSU MPI-style allreduce latency test" in result.stdout and "timing: barrier" in result.stdout
    assert "# Size" in result.stdout and "Avg Latency(us)" in result.stdout and "Max Latency(us)" in result.stdout
    assert "# algorithm: ring" in result.stdout and "# algorithm: native" in result.stdout
    rows = [ln.split() for ln in result.stdout.splitlines() if ln[:1].isdigit()]
    assert [r[0] for r in rows] == ["1024", "2048", "4096"] * 2  # -m with factor 2
    for _size, avg, low, high, iters in rows:
        assert float(low) <= float(avg) <= float(high) and int(iters) == 3
    text = csv_path.read_text().splitlines()
    assert text[0].startswith("# command:") and "mpicoll.bench allreduce" in text[0]
    assert text[2].startswith("collective,algorithm,compressor,nranks,size_bytes")
    assert len(text) == 3 + 6


def test_plot_writes_a_readable_png(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    data = tmp_path / "run.json"
    rows = [{"collective": "allreduce", "algorithm": algo, "size_bytes": size, "busbw_GBps": size / 1e6 * k,
             "algbw_GBps": 1.0, "time_us": 10.0} for k, algo in enumerate(["ring", "tree"], 1)
            for size in (4096, 65536, 1 << 20)]
    data.write_text(json.dumps({"meta": {}, "results": rows}))
    png = tmp_path / "busbw.png"
    done = subprocess.run([sys.executable, "-m", "mpicoll.bench", "plot", str(data), "--out", str(png)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > 400 and height > 300


def test_soak_counts_wrong_results_and_memory(tmp_path):
    out = tmp_path / "soak.json"
    result = run_ranks(2, ["-m", "mpicoll.bench", "soak", "-n", "300", "--json", str(out)], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout
    summary = json.loads(out.read_text())["summary"]
    assert summary["calls"] == 300 and summary["wrong"] == 0
    assert len(summary["rss_start_MiB"]) == 2 and all(m > 10 for m in summary["rss_end_MiB"])
    assert "largest growth" in result.stdout


@pytest.mark.parametrize("compressor", [None, "fp16"])
def test_overlap_reports_osu_columns(tmp_path, compressor):
    out = tmp_path / "overlap.json"
    args = ["-m", "mpicoll.bench", "overlap", "-b", "64K", "-e", "256K", "-n", "3", "--json", str(out)]
    args += ["--compressor", compressor] if compressor else []
    result = run_ranks(2, args, tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout
    rows = json.loads(out.read_text())["results"]
    assert [r["size"] for r in rows] == [65536, 262144]
    for r in rows:
        # Times and the percentages derived from them vary with load (a loaded machine once
        # measured 2637%): check that they are reported, never their values.
        assert r["wrong"] == 0 and r["pure_s"] > 0 and r["overall_s"] > 0 and r["compute_s"] > 0
        assert all(math.isfinite(r[k]) for k in ("strict_pct", "overlap_pct"))
        assert r["algorithm"] == ("ring" if compressor is None else "auto")
    assert "overlap(%)" in result.stdout and "out of bounds values : 0 OK" in result.stdout


def test_probe_predict_and_model_check(tmp_path):
    """The cost model's three commands: a probe under mpiexec writes a model, predict projects it
    (no MPI) with its plot, and model-check measures every path beside its prediction."""
    model = tmp_path / "model.json"
    result = run_ranks(3, ["-m", "mpicoll.bench", "probe", "--json", str(model), "--repeats", "1"], tmp_path,
                       timeout=300)
    assert result.returncode == 0, result.stdout
    assert "link intra" in result.stdout and "codec sign" in result.stdout
    document = json.loads(model.read_text())
    assert {k: document["probed_on"][k] for k in ("ranks", "hosts", "per_host")} == {"ranks": 3, "hosts": 1,
                                                                                   "per_host": 3}
    assert [size for size, _ in document["probed_on"]["pings"]["intra"]] == [8, 1 << 20, 4 << 20]
    assert set(document["codecs"]) >= {"fp16", "sign", "topk", "powersgd"}
    out, png = tmp_path / "pred.json", tmp_path / "pred.png"
    plotting = importlib.util.find_spec("matplotlib") is not None  # the bench extra; not in the Open MPI venv
    predicted = subprocess.run([sys.executable, "-m", "mpicoll.bench", "predict", "--model", str(model), "--ranks",
                                "8,64", "--rate", "1gbit,100gbit", "--size", "97M", "--json", str(out),
                                *(["--plot", str(png)] if plotting else [])],
                               capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert predicted.returncode == 0, predicted.stderr
    rows = json.loads(out.read_text())["predictions"]
    assert len(rows) == 2 * 2 * 5 and all(r["seconds"] > 0 for r in rows)
    assert not plotting or png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gpu_out = tmp_path / "pred-gpu.json"  # the codecs priced by the H200's kernels (gpu_check's JSON)
    predicted = subprocess.run([sys.executable, "-m", "mpicoll.bench", "predict", "--model", str(model), "--ranks",
                                "8,64", "--rate", "1gbit,100gbit", "--size", "97M", "--intra-rate", "3600gbit",
                                "--codec-rates", str(ROOT / "bench/results/gpu/h200_codec_rates.json"),
                                "--json", str(gpu_out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert predicted.returncode == 0, predicted.stderr
    gpu = json.loads(gpu_out.read_text())
    assert "NVIDIA H200" in gpu["model"]["probed_on"]["codecs_from"]
    # the prediction priced sign with the file's rates (compared as numbers read, not as times measured here)
    h200 = json.loads((ROOT / "bench/results/gpu/h200_codec_rates.json").read_text())["codec_rates"]
    assert gpu["model"]["codecs"]["sign"]["compress_Bps"] == h200["codecs"]["sign"]["compress_Bps"]
    assert gpu["model"]["gamma"] == h200["gamma"]
    not_rates = tmp_path / "not-rates.json"
    not_rates.write_text('{"codec_rates": {"codecs": 5}}')
    for bad, says in ((["--intra-rate", "fast"], "not a rate"), (["--codec-rates", str(not_rates)], "gpu_check --json"),
                      (["--codec-rates", str(tmp_path / "missing.json")], "gpu_check --json")):
        refused = subprocess.run([sys.executable, "-m", "mpicoll.bench", "predict", "--model", str(model), "--ranks",
                                  "8", "--size", "97M", *bad], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert refused.returncode != 0 and says in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    check = tmp_path / "check.json"
    result = run_ranks(2, ["-m", "mpicoll.bench", "model-check", "--model", str(model), "--sizes", "64K",
                           "--repeats", "1", "--json", str(check)], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout
    checked = {r["path"] for r in json.loads(check.read_text())["rows"]}
    assert {"ring", "native", "fp16:ring", "sign:two_phase", "powersgd:powersgd"} <= checked
    report = subprocess.run([sys.executable, "-m", "mpicoll.bench", "model-report", str(check)], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert report.returncode == 0 and "| check | ring | 64K |" in report.stdout, report.stdout + report.stderr


def test_allreduce_bench_in_place_on_shared_memory(tmp_path):
    """The zero-copy case of algorithm='shm': every algorithm in place on a shared_empty array."""
    result = run_ranks(2, ["-m", "mpicoll.bench", "allreduce", "-b", "64K", "-e", "64K", "-n", "2", "-w", "1",
                           "--repeats", "1", "--algo", "ring,shm,native", "--in-place-shared", "-o", "max", "-q"],
                       tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "out of bounds values : 0 OK" in result.stdout and " shm " in result.stdout
