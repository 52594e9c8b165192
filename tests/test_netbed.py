"""The multi-host bed: network namespaces with shaped links, MPI across them over TCP.

Skipped with the reason where namespaces cannot be created (not root, no iproute2); CI runs as
root and runs them.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
from launch import ROOT
from mpicoll.bench.netbed import NetBed, available

ok, why = available()
pytestmark = pytest.mark.skipif(not ok, reason=f"network namespaces unavailable: {why}")

PROBE = """
import numpy as np, socket, subprocess
from mpi4py import MPI
import mpicoll
c = MPI.COMM_WORLD
addr = subprocess.run(["ip", "-4", "-o", "addr", "show", "eth0"], capture_output=True, text=True).stdout.split()[3]
x = np.full(2_000_000, c.rank + 1, dtype=np.float32)  # 8 MB
y = mpicoll.allreduce(x, algorithm="ring")
addrs = c.allgather(addr)
if c.rank == 0:
    print("ADDRS", " ".join(addrs), "SUM", float(y[0]), flush=True)
"""


def test_ranks_run_on_separate_hosts_and_bytes_cross_the_links(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    with NetBed(3, rate="500mbit") as bed:
        before = bed.tx_bytes()
        done = bed.run([sys.executable, str(script)], timeout=180, capture_output=True, text=True, cwd=ROOT)
        sent = [a - b for a, b in zip(bed.tx_bytes(), before, strict=True)]
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("ADDRS"))
    addrs = line.split()[1:4]
    assert len(set(addrs)) == 3 and all(a.startswith("10.77.0.") for a in addrs), line
    assert line.endswith("SUM 6.0")
    # the ring moves 2(p-1)/p * 8 MB per rank: every link must have carried at least that
    assert min(sent) >= 2 * 2 / 3 * 8e6, sent


def test_compressed_bench_on_the_bed(tmp_path):
    out = tmp_path / "bed.json"
    command = [sys.executable, "-m", "mpicoll.bench", "compressed-allreduce", "-s", "4M", "--repeats", "1",
               "--compressors", "topk,sign,int8", "--json", str(out)]
    with NetBed(3, rate="500mbit") as bed:
        done = bed.run(command, timeout=300, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    ring = rows["ring (uncompressed)"]["wire_bytes_per_rank"]
    assert ring >= 2 * 2 / 3 * 4 * 2**20  # measured on the link, TCP overhead included
    assert rows["sign + EF"]["wire_bytes_per_rank"] < ring / 10
    assert rows["topk + EF"]["wire_bytes_per_rank"] < ring / 10
    assert rows["int8 + EF"]["wire_bytes_per_rank"] < ring / 2.5
    assert all(r["time_s"] > 0 for r in rows.values())


def test_netbed_command_line():
    done = subprocess.run([sys.executable, "-m", "mpicoll.bench.netbed", "run", "--hosts", "2", "--rate", "500mbit",
                           "--", sys.executable, "-c",
                           "import sys; from mpi4py import MPI; sys.stdout.write(f'rank {MPI.COMM_WORLD.rank}\\n')"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rank 0" in done.stdout and "rank 1" in done.stdout
    assert "bytes each host sent on its link" in done.stdout
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count("mc") == 0


def test_hosts_get_cores_of_their_own(tmp_path):
    """Each host's ranks are pinned to their own share of the cores (one each, round-robin, when
    hosts outnumber cores), so one host's thread pools cannot spin on another's cores."""
    show = ("import os; from mpi4py import MPI; c = MPI.COMM_WORLD; "
            "got = c.gather(sorted(os.sched_getaffinity(0))); c.rank or print('CORES', got, flush=True)")
    mine = sorted(os.sched_getaffinity(0))
    for hosts in (2, 3):
        with NetBed(hosts, rate="500mbit") as bed:
            done = bed.run([sys.executable, "-c", show], timeout=180, capture_output=True, text=True, cwd=ROOT)
            expected = [[int(c) for c in cores.split(",")] for cores in bed.cores]
        assert done.returncode == 0, done.stdout + done.stderr
        got = ast.literal_eval(next(ln for ln in done.stdout.splitlines() if ln.startswith("CORES"))[6:])
        assert got == expected, (got, expected)
        if hosts <= len(mine):  # disjoint shares that use every core
            assert sum(len(c) for c in got) == len({x for c in got for x in c}) == len(mine)
        else:
            assert all(len(c) == 1 for c in got)
    assert NetBed(2, pin=False, workdir=tmp_path).cores == ["", ""]


def test_a_burst_tc_refuses_is_a_clear_error():
    done = subprocess.run([sys.executable, "-m", "mpicoll.bench.netbed", "run", "--hosts", "2", "--burst", "bogus",
                           "--", "true"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "tc refused" in done.stderr and "burst" in done.stderr, done.stderr
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count("mc") == 0


HIERARCHY = """
import numpy as np
from mpi4py import MPI
import mpicoll
from mpicoll import compression
c = mpicoll.default_comm()
bad = []
for n in (1, 5, 4099, 300007):
    x = ((np.arange(n) * 7 + c.rank * 13) % 1001).astype(np.int64)
    want = np.empty_like(x)
    c.mpi.Allreduce(x, want)
    for algorithm in ("hierarchical", "auto"):
        if not (mpicoll.allreduce(x, algorithm=algorithm) == want).all():
            bad.append((n, algorithm))
    got = mpicoll.compressed_allreduce(x.astype(np.float32), compression.get("none"), average=False)
    if not (got == want.astype(np.float32)).all():
        bad.append((n, "compressed"))
report = c.mpi.gather((c.hosts, bad))
if c.rank == 0:
    print("HOSTS", report[0][0], "BAD", [b for _, b in report if b], flush=True)
"""


@pytest.mark.parametrize(("per_host", "cyclic"), [((2, 2), False), ((2, 2, 2), False), ((2, 1), False),
                                                  ((2, 2), True), ((2, 2, 2), True)])
def test_hierarchical_allreduce_across_namespace_hosts(tmp_path, per_host, cyclic):
    script = tmp_path / "hierarchy.py"
    script.write_text(HIERARCHY)
    with NetBed(len(per_host), rate="1gbit") as bed:
        done = bed.run([sys.executable, str(script)], timeout=240, ranks_per_host=list(per_host), cyclic=cyclic,
                       capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("HOSTS"))
    if cyclic:  # ranks dealt round-robin: a host's ranks are not neighbours in rank order
        hosts = tuple(r % len(per_host) for r in range(sum(per_host)))
    else:
        hosts = tuple(h for h, k in enumerate(per_host) for _ in range(k))
    assert line == f"HOSTS {hosts} BAD []", line  # MPI itself sees one node per namespace host
