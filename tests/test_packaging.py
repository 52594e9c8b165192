"""Packaging: the wheel and the editable install ship mpicoll.kernels and mpicoll.bench, never a bare
``kernels`` (that name belongs to another PyPI project)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = sysconfig.get_paths()["purelib"]  # this venv's site-packages: numpy and mpi4py come from here
IGNORE = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*cache*")

CHECK = f"""
import site, sys
site.addsitedir({SITE!r})
import importlib.resources
import mpicoll, mpicoll.kernels, mpicoll.bench.cli  # none of these initializes MPI
print(mpicoll.__file__)
print(importlib.resources.files("mpicoll").joinpath("collectives/auto_table.json").read_text()[:1])
try:
    import kernels
except ModuleNotFoundError:
    print("no bare kernels")
else:
    print("bare kernels importable from", kernels.__file__)
"""


def source_copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    return src


def fresh_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    return venv / "bin" / "python"


def pip(python: Path, *args: str) -> None:
    """Install as a user would: PEP 517 build isolation (setuptools>=64 from pyproject.toml)."""
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", *args],
                          timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def check_install(python: Path, expect_in: Path) -> None:
    out = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True, timeout=120, cwd="/")
    lines = out.stdout.split("\n")
    assert out.returncode == 0, out.stderr
    assert Path(lines[0]).is_relative_to(expect_in), lines[0]
    assert lines[1] == "{", "auto_table.json (package data) is missing"
    assert lines[2] == "no bare kernels", lines[2]


@pytest.mark.slow
def test_wheel(tmp_path: Path) -> None:
    src = source_copy(tmp_path)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                           str(src)], timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    wheel = next((tmp_path / "dist").glob("mpicoll-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    packages = [p.parent.relative_to(src) for top in ("mpicoll", "kernels", "bench")
                for p in (src / top).rglob("__init__.py")]
    installed = [str(Path("mpicoll") / p) if p.parts[0] != "mpicoll" else str(p) for p in packages]
    missing = [p for p in installed if f"{p}/__init__.py" not in names]
    assert not missing, f"packages missing from the wheel (add them to setup.py's packages=): {missing}"
    for needed in ("mpicoll/__init__.py", "mpicoll/kernels/__init__.py", "mpicoll/bench/cli.py",
                   "mpicoll/kernels/numba_cpu/__init__.py", "mpicoll/kernels/numba_cuda/__init__.py",
                   "mpicoll/kernels/cupy_provider/__init__.py", "mpicoll/kernels/cuda/select.cu",
                   "mpicoll/collectives/auto_table.json", "mpicoll/transport/comm.py"):
        assert needed in names, f"{needed} missing from {wheel.name}"
    tops = {n.split("/")[0] for n in names}
    assert not tops & {"kernels", "bench", "tests"}, tops
    python = fresh_venv(tmp_path)
    pip(python, str(wheel))
    check_install(python, tmp_path / "venv")


@pytest.mark.slow
def test_editable(tmp_path: Path) -> None:
    src = source_copy(tmp_path)
    python = fresh_venv(tmp_path)
    pip(python, "-e", str(src))
    check_install(python, src)
