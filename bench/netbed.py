"""A multi-host test bed on one machine: Linux network namespaces with rate-limited links.

``python -m mpicoll.bench.netbed run --hosts 3 --rate 200mbit -- python -m mpicoll.bench ...``
starts ``--hosts`` "hosts" (network namespaces, each with an ``eth0`` whose egress is shaped by
``tc ... tbf``), joined by veth pairs to a bridge in its own namespace, runs one MPI rank per
host over TCP, prints how many bytes each link really carried, and tears everything down.
``up`` and ``down`` do the two halves by hand. Needs root (``ip netns``) and iproute2.

MPI across namespaces: the launcher runs in the first host; a generated "ssh" runs each remote
command with ``ip netns exec`` in a UTS namespace of its own, whose hostname is the host's name.
Shared memory must be ruled out or MPI would bypass the links: every host has its own address
and hostname (so MPI sees different nodes), and TCP is forced
(``UCX_TLS=tcp,self`` for the MPICH wheel, ``--mca pml ob1 --mca btl tcp,self,sm`` for Open MPI;
ranks on one host still share memory, as on a real node).
Addresses are ``10.77.<n>.<i>/24``, private and only reachable inside these namespaces.

Cores: real hosts have cores of their own, so every host's processes are pinned (``taskset``) to
their own share of this machine's cores, or to one core each, round-robin, when there are more
hosts than cores (``pin=False`` / ``--no-pin``: all share all). Unpinned, each rank sized its
thread pools for the whole machine (it is alone on its "host") and the hosts' BLAS and Numba
threads spun on each other's cores: PowerSGD's compressed all-reduce of 1 MiB took 40 ms instead
of 2, and a 4 KiB ``MPI_Allreduce`` 3.9 ms instead of ~0.1 (bench/RESULTS.md, issue 17).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def available() -> tuple[bool, str]:
    """Whether network namespaces can be created here, and why not."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return False, "iproute2 (ip, tc) is not installed"
    if os.geteuid() != 0:
        return False, "creating network namespaces needs root"
    probe = f"mcprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode:
        return False, f"'ip netns add' failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return True, ""


@dataclass
class NetBed:
    """``hosts`` namespaces named ``<prefix>h<i>`` around a bridge namespace ``<prefix>br``."""

    hosts: int
    rate: str = "200mbit"
    #: tbf's bucket: 1 Mbit (128 KiB) is above a 64 KiB GSO packet, which the rate needs (a 32 kbit
    #: bucket held TCP far below it), and below what a compressed payload weighs: a 4 Mbit one let
    #: 512 KiB after any idle spell through for free (a 64 KiB all-reduce at 50 Mbit/s took 0.07 ms
    #: instead of 11, and the 1 MiB tree ran 1.9x faster than the link allows)
    burst: str = "1mbit"
    prefix: str = field(default_factory=lambda: f"mc{os.getpid() % 100000}")
    subnet: int = 77
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mpicoll-netbed-")))
    pin: bool = True

    @property
    def names(self) -> list[str]:
        return [f"{self.prefix}h{i}" for i in range(self.hosts)]

    @property
    def addresses(self) -> list[str]:
        return [f"10.{self.subnet}.0.{i + 1}" for i in range(self.hosts)]

    @property
    def cores(self) -> list[str]:
        """Per host, the ``taskset`` CPU list its processes run on (module docstring); ``""`` for
        every host when unpinned."""
        if not self.pin:
            return [""] * self.hosts
        mine = sorted(os.sched_getaffinity(0))
        if self.hosts >= len(mine):
            return [str(mine[i % len(mine)]) for i in range(self.hosts)]
        n = len(mine)  # host i gets mine[i n / hosts : (i + 1) n / hosts]: every core used, shares differ by <= 1
        return [",".join(str(c) for c in mine[i * n // self.hosts:(i + 1) * n // self.hosts])
                for i in range(self.hosts)]

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def up(self) -> NetBed:
        """Create the namespaces, links, addresses, rate limits and the fake ssh."""
        try:
            _ip("netns", "add", self.bridge)
            _ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.bridge, "link", "set", "br0", "up")
            for i, (name, address) in enumerate(zip(self.names, self.addresses, strict=True)):
                self._host(i, name, address)
            self._write_ssh()
        except (subprocess.CalledProcessError, OSError, ValueError):
            self.down()
            raise
        return self

    def _host(self, i: int, name: str, address: str) -> None:
        veth = f"{self.prefix}v{i}"
        _ip("netns", "add", name)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
        _ip("link", "set", veth, "netns", self.bridge)
        _ip("-n", self.bridge, "link", "set", veth, "master", "br0")
        _ip("-n", self.bridge, "link", "set", veth, "up")
        _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", name, "link", "set", "eth0", "up")
        _ip("-n", name, "link", "set", "lo", "up")
        shaped = subprocess.run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
                                 "rate", self.rate, "burst", self.burst, "latency", "50ms"],
                                capture_output=True, text=True)
        if shaped.returncode:
            raise ValueError(f"netbed: tc refused rate {self.rate!r} burst {self.burst!r}: {shaped.stderr.strip()}")

    def _write_ssh(self) -> None:
        cases = "\n".join(f"  {a}) ns={n} cpus={c} ;;"
                           for a, n, c in zip(self.addresses, self.names, self.cores, strict=True))
        script = self.workdir / "ssh"
        script.write_text(f"""#!/bin/sh
# Generated by mpicoll.bench.netbed: "ssh" into a network-namespace host.
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
case "$1" in
{cases}
  *) echo "netbed ssh: unknown host $1" >&2; exit 255 ;;
esac
shift
# own network namespace and own hostname (a UTS namespace), so MPI sees a separate node;
# its own cores (taskset), as a separate node has
pin=""; [ -n "$cpus" ] && pin="taskset -c $cpus"
exec ip netns exec "$ns" $pin unshare --uts /bin/sh -c 'hostname "$0" && eval "$1"' "$ns" "$*"
""")
        script.chmod(0o755)

    def down(self) -> None:
        """Kill what still runs in the bed (a launch that failed half-way can leave a remote MPI
        proxy behind, which deleting its namespace would not stop), then delete every namespace
        (their veth pairs go with them)."""
        for name in [*self.names, self.bridge]:
            pids = _ip("netns", "pids", name, check=False).stdout.split()
            if pids:
                subprocess.run(["kill", "-9", *pids], capture_output=True)
            _ip("netns", "del", name, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def tx_bytes(self) -> list[int]:
        """Bytes each host's eth0 has sent so far (what really crossed its shaped link)."""
        counts = []
        for name in self.names:
            out = subprocess.run(["ip", "netns", "exec", name, "cat", "/sys/class/net/eth0/statistics/tx_bytes"],
                                 capture_output=True, text=True, check=True)
            counts.append(int(out.stdout))
        return counts

    def mpiexec(self, command: Sequence[str], ranks_per_host: int | Sequence[int] = 1,
                cyclic: bool = False) -> list[str]:
        """The command line that runs ``command`` across the hosts over TCP: ``ranks_per_host`` ranks
        on every host, or ``ranks_per_host[i]`` on host ``i`` (uneven hosts). Ranks on one host
        talk through shared memory, as on a real node. Ranks are placed in blocks (ranks 0..k-1 on
        the first host, as Slurm's default distribution does) or, with ``cyclic``, dealt round-robin
        over the hosts (Slurm's ``--distribution=cyclic``; even ``ranks_per_host`` only)."""
        per_host = [ranks_per_host] * self.hosts if isinstance(ranks_per_host, int) else list(ranks_per_host)
        if len(per_host) != self.hosts or min(per_host) < 1:
            raise ValueError(f"ranks_per_host {ranks_per_host!r} does not fit {self.hosts} hosts")
        if cyclic and len(set(per_host)) != 1:
            raise ValueError(f"cyclic placement needs the same ranks on every host, not {per_host}")
        mpiexec = str(Path(sys.prefix) / "bin" / "mpiexec")
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True).stdout
        n = str(sum(per_host))
        hosts = ",".join(f"{a}:{k}" for a, k in zip(self.addresses, per_host, strict=True))
        if "Open MPI" in version or "OpenRTE" in version:
            placement = "node:OVERSUBSCRIBE" if cyclic else "slot:OVERSUBSCRIBE"
            launch = [mpiexec, "--allow-run-as-root", "--map-by", placement, "--prtemca", "plm_ssh_agent",
                      str(self.workdir / "ssh"), "--mca", "pml", "ob1", "--mca", "btl", "tcp,self,sm",
                      "--mca", "btl_tcp_if_include", "eth0", "--host", hosts, "-n", n]
        else:
            if cyclic:  # hydra fills each host's slots in turn and wraps around: one slot each deals ranks
                hosts = ",".join(f"{a}:1" for a in self.addresses)
            launch = [mpiexec, "-launcher", "ssh", "-launcher-exec", str(self.workdir / "ssh"), "-hosts", hosts,
                      "-genv", "UCX_TLS", "tcp,self", "-genv", "UCX_NET_DEVICES", "eth0", "-n", n]
        pin = ["taskset", "-c", self.cores[0]] if self.cores[0] else []
        return ["ip", "netns", "exec", self.names[0], *pin, "unshare", "--uts", "/bin/sh", "-c",
                'hostname "$0" && exec "$@"', self.names[0], *launch, *command]

    def run(self, command: Sequence[str], timeout: float | None = None, ranks_per_host: int | Sequence[int] = 1,
            cyclic: bool = False, **kwargs: object) -> subprocess.CompletedProcess:
        """Run ``command`` under MPI across the hosts (placement as in :meth:`mpiexec`;
        ``subprocess.run`` keyword arguments pass through)."""
        return subprocess.run(self.mpiexec(command, ranks_per_host, cyclic), timeout=timeout, **kwargs)

    def __enter__(self) -> NetBed:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpicoll.bench.netbed", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="bring the bed up, run a command under MPI across it, tear it down")
    run.add_argument("--hosts", type=int, default=3)
    run.add_argument("--rate", default="200mbit", help="tc tbf rate of every host's egress (default 200mbit)")
    run.add_argument("--ranks-per-host", default="1",
                     help="ranks on every host, or per host comma-separated, e.g. 2,1 (default 1)")
    run.add_argument("--cyclic", action="store_true",
                     help="deal ranks round-robin over the hosts instead of in blocks (even hosts only)")
    run.add_argument("--burst", default=NetBed.burst,
                     help=f"tc tbf burst of every host's egress (default {NetBed.burst}): bytes a link sends at "
                          f"full speed after an idle spell; at least 512kbit (a 64 KiB packet), or TCP stalls")
    run.add_argument("--no-pin", dest="pin", action="store_false",
                     help="let every host's processes run on all cores (default: each host its own share)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="after --: the command each rank runs")
    args = parser.parse_args(argv)
    ok, why = available()
    if not ok:
        print(f"netbed: cannot create network namespaces here: {why}", file=sys.stderr)
        return 2
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    per_host = [int(k) for k in args.ranks_per_host.split(",")]
    try:
        with NetBed(args.hosts, args.rate, args.burst, pin=args.pin) as bed:
            before = bed.tx_bytes()
            done = bed.run(command, ranks_per_host=per_host[0] if len(per_host) == 1 else per_host,
                           cyclic=args.cyclic)
            sent = [after - b for after, b in zip(bed.tx_bytes(), before, strict=True)]
            print(f"# netbed: {args.hosts} hosts at {args.rate}; bytes each host sent on its link: {sent}", flush=True)
            return done.returncode
    except ValueError as error:  # a rate, burst or placement that the bed cannot take
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
