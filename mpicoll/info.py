"""``python -m mpicoll info``: what mpicoll sees on this machine and in this job.

Package and MPI library versions, the thread level MPI granted, rank and host counts, how the
job was launched, the CUDA-awareness setting, the kernel providers (and why one is unavailable),
the configuration, and the table ``algorithm="auto"`` reads. Collective when run under MPI: every
rank contributes its host name and launcher; rank 0 prints.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections import Counter
from typing import Any

_THREAD_LEVELS = ("MPI_THREAD_SINGLE", "MPI_THREAD_FUNNELED", "MPI_THREAD_SERIALIZED", "MPI_THREAD_MULTIPLE")


def launcher() -> dict[str, Any]:
    """How this process was started, from the environment launchers leave behind."""
    env = os.environ
    if "SLURM_JOB_ID" in env and ("SLURM_PROCID" in env or "SLURM_STEP_ID" in env):
        how = "srun" if "SLURM_STEP_ID" in env else "slurm batch script"
        return {"launcher": how, "slurm_job_id": env["SLURM_JOB_ID"],
                "slurm_nodelist": env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "")),
                "slurm_tasks_per_node": env.get("SLURM_TASKS_PER_NODE", ""),
                "slurm_mpi_type": env.get("SLURM_MPI_TYPE", "")}
    if "OMPI_COMM_WORLD_SIZE" in env:
        return {"launcher": "Open MPI mpirun/mpiexec (PRRTE)"}
    if "PMI_RANK" in env or "PMI_SIZE" in env or "HYDI_CONTROL_FD" in env:
        return {"launcher": "MPICH mpiexec (Hydra, PMI)"}
    if "PMIX_RANK" in env:
        return {"launcher": "a PMIx launcher"}
    return {"launcher": "none (singleton MPI process)"}


def collect() -> dict[str, Any]:
    """Gather the report. Collective over ``MPI.COMM_WORLD``."""
    import mpi4py
    import numpy as np
    from mpi4py import MPI

    import mpicoll
    from mpicoll.collectives.internal import auto
    from mpicoll.kernels import provider_status

    world = MPI.COMM_WORLD
    hosts = world.allgather(MPI.Get_processor_name())
    per_host = Counter(hosts)
    return {
        "mpicoll": mpicoll.__version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "numpy": np.__version__,
        "mpi4py": mpi4py.__version__,
        "mpi_library": MPI.Get_library_version().replace("\x00", "").strip().splitlines()[0].strip(),
        "mpi_standard": "{}.{}".format(*MPI.Get_version()),
        "thread_level": _THREAD_LEVELS[MPI.Query_thread()],
        "ranks": world.Get_size(),
        "hosts": len(per_host),
        "ranks_per_host": dict(per_host),
        "launch": launcher(),
        "python_m_mpi4py": "mpi4py.run" in sys.modules,
        "cuda_aware": {
            "setting": mpicoll.config.get("cuda_aware"),
            "meaning": {"1": "GPU buffers go to MPI directly",
                        "0": "GPU buffers are staged through pinned host memory",
                        "unset": "GPU buffers are staged through pinned host memory (with a warning); set "
                                 "MPICOLL_CUDA_AWARE=1 if your MPI is CUDA-aware (mpi4py cannot query it)",
                        }[mpicoll.config.get("cuda_aware")],
        },
        "kernel_providers": [
            {"name": s.name, "device": s.device, "available": s.available, "reason": s.reason}
            for s in provider_status()
        ],
        "config": mpicoll.config.as_dict(),
        "auto_table": auto.table_path() or "(bundled)",
    }


def format_report(report: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`collect`."""
    lines = [
        f"mpicoll {report['mpicoll']}",
        f"  python        {report['python']}",
        f"  numpy         {report['numpy']}",
        f"  mpi4py        {report['mpi4py']}",
        f"  MPI library   {report['mpi_library']} (MPI {report['mpi_standard']})",
        f"  thread level  {report['thread_level']}",
        f"  ranks         {report['ranks']} on {report['hosts']} host(s): "
        + ", ".join(f"{h} x{n}" for h, n in report["ranks_per_host"].items()),
        "  launched by   " + ", ".join(f"{k}={v}" for k, v in report["launch"].items() if v)
        + (" via python -m mpi4py" if report["python_m_mpi4py"] else ""),
        f"  CUDA-aware    {report['cuda_aware']['setting']}: {report['cuda_aware']['meaning']}",
        "  kernel providers:",
    ]
    for p in report["kernel_providers"]:
        mark = "yes" if p["available"] else "no "
        lines.append(f"    {p['name']:<11} {p['device']:<5} {mark} {p['reason']}")
    lines.append("  configuration (env MPICOLL_<KEY>):")
    lines.extend(f"    {k:<17} {v!r}" for k, v in report["config"].items())
    lines.append(f"  auto table    {report['auto_table']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``python -m mpicoll info [--json]``."""
    report = collect()
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 0:
        text = json.dumps(report, indent=1) if "--json" in argv else format_report(report)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return 0
