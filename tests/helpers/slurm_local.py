"""A real single-node Slurm on localhost, for tests: start, submit, wait, stop.

``LocalSlurm`` writes a configuration into a temporary directory (no cgroups, no munge, no
accounting: ``auth/none``), starts ``slurmctld`` and ``slurmd`` in the foreground as child
processes, waits until the node is idle, submits job scripts with ``sbatch``, polls
``scontrol`` until a job ends (there is no accounting database for ``sacct``), and stops both
daemons. Needs Debian's ``slurmctld slurmd slurm-client`` (Slurm 22.05); CI installs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

CONFIG = """ClusterName=mpicoll
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def available() -> tuple[bool, str]:
    """Whether Slurm's daemons and client are installed, and why not."""
    missing = [tool for tool in ("slurmctld", "slurmd", "sbatch", "scontrol", "sinfo") if shutil.which(tool) is None]
    if missing:
        return False, (f"Slurm is not installed ({', '.join(missing)} missing): "
                       "apt-get install slurmctld slurmd slurm-client")
    if os.geteuid() != 0:
        return False, "the local Slurm runs its daemons as root"
    return True, ""


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports: the sockets are held open together, so the kernel cannot hand
    out the same port twice (which made slurmd take the controller's port once)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LocalSlurm:
    """One controller and one compute node on this machine, configured under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.dir = Path(workdir)
        self.host = socket.gethostname()
        self.conf = self.dir / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.daemons: list[subprocess.Popen] = []

    def start(self, timeout: float = 60) -> LocalSlurm:
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        ctld_port, slurmd_port = _free_ports(2)
        self.conf.write_text(CONFIG.format(host=self.host, dir=self.dir, ctld_port=ctld_port,
                                           slurmd_port=slurmd_port, cpus=os.cpu_count() or 1))
        self.daemons.append(subprocess.Popen(["slurmctld", "-D", "-i"], env=self.env, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL))
        self.daemons.append(subprocess.Popen(["slurmd", "-D", "-N", self.host], env=self.env,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self._run(["sinfo", "-h", "-o", "%t"], check=False).stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the local Slurm did not come up within {timeout:.0f} s; logs: {self.logs()}")

    def _run(self, cmd: list[str], check: bool = True, **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=kwargs.pop("env", self.env), capture_output=True, text=True, check=check,
                              timeout=60, **kwargs)

    def sbatch(self, script: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
        """Submit a job script; returns the job id."""
        done = self._run(["sbatch", "--parsable", *args, str(script)], env={**self.env, **(env or {})}, cwd=cwd)
        return done.stdout.strip().split(";")[0]

    def wait(self, job_id: str, timeout: float = 300) -> dict[str, str]:
        """Poll ``scontrol show job`` until the job ends; returns its fields (JobState, ExitCode, ...)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._run(["scontrol", "-o", "show", "job", job_id]).stdout
            fields = dict(item.split("=", 1) for item in text.split() if "=" in item)
            if fields.get("JobState") not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
                return fields
            time.sleep(0.5)
        self._run(["scancel", job_id], check=False)
        raise TimeoutError(f"job {job_id} still running after {timeout:.0f} s (cancelled); logs: {self.logs()}")

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.dir / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop both daemons (and anything they left running)."""
        for daemon in self.daemons:
            daemon.terminate()
        for daemon in self.daemons:
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
        self.daemons.clear()

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
