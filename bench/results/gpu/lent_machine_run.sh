#!/bin/bash
# The prepared GPU check on a bare lent machine (CUDA python with torch/cupy/numba-cuda, no MPI):
# a venv over that python with the MPICH wheel, mpi4py and mpicoll's wheel, then the check.
# Prepare here, in the repository root (ignored folder .whl/, carried to the device):
#   echo /.whl/ >> .git/info/exclude; mkdir -p .whl; cp bench/results/gpu/lent_machine_run.sh .whl/run.sh
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux1_x86_64 \
#     -d .whl mpich==5.0.2 mpi4py==4.1.2
#   .venv/bin/pip wheel --no-deps --no-build-isolation -w .whl .      # mpicoll itself, from this tree
# then run `bash .whl/run.sh` there, carrying .whl (results land in $OUT).
R=$PWD
exec > >(tee "$OUT/run.log") 2>&1
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
PY=$(command -v python3)
PARENT=$($PY -c "import site; print(site.getsitepackages()[0])")
$PY -m venv --without-pip --system-site-packages /tmp/v || exit 1
SITE=$(/tmp/v/bin/python -c "import site; print(site.getsitepackages()[0])")
echo "$PARENT" > "$SITE/parent.pth"
$PY -m pip install -q --ignore-installed --prefix=/tmp/v --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 1
export PATH=/tmp/v/bin:$PATH LD_LIBRARY_PATH=/tmp/v/lib:${LD_LIBRARY_PATH:-} PYTHONUNBUFFERED=1 HYDRA_LAUNCHER=fork
cd /tmp
python -c "
import sys, numpy, cupy, numba, torch, mpi4py, mpicoll
from mpi4py import MPI
import numba_cuda
print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__, 'numba', numba.__version__,
      'numba-cuda', getattr(numba_cuda, '__version__', '?'), 'torch', torch.__version__, 'mpi4py', mpi4py.__version__,
      MPI.Get_library_version().splitlines()[0], 'mpicoll', mpicoll.__file__)"
timeout 30 python -m mpicoll info 2>&1 | head -40
timeout 20 mpiexec -n 2 python -c "from mpi4py import MPI; print('rank', MPI.COMM_WORLD.rank)"
# tests/gpu first (seconds), then the full check (about 100 s on an H200)
timeout 80 python -m pytest -q -o addopts= -rfE -p no:cacheprovider "$R/tests/gpu" > "$OUT/pytest_gpu.log" 2>&1; rc=$?
tail -20 "$OUT/pytest_gpu.log"
echo "pytest rc=$rc"
timeout 330 python -m mpicoll.bench.gpu_check --json "$OUT/gpu_check.json"
echo "gpu_check rc=$?"
date -u
