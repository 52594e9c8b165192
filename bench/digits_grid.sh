#!/bin/sh
# The digits lr grid of bench/RESULTS.md ("Compressed SGD at the user's learning rate"): 4 ranks,
# every method of examples/digits_lr_grid.py per (seed, lr) launch (about 12 min each on 2 loaded
# cores); JSON lines appended to $OUT. Usage: sh bench/digits_grid.sh [OUT] ["SEED:LR ..."]
OUT=${1:-bench/results/digits-lr-grid-4ranks.jsonl}
RUNS=${2:-"0:0.1 0:0.2 0:0.05 0:0.02 1:0.2 2:0.2 1:0.1 2:0.1 1:0.05 2:0.05 1:0.02 2:0.02"}
PY=${PYTHON:-.venv/bin/python}
MPIEXEC=${MPIEXEC:-.venv/bin/mpiexec}
for run in $RUNS; do
  seed=${run%%:*}; lr=${run#*:}
  timeout 1800 "$MPIEXEC" -n 4 "$PY" -W ignore -m mpi4py examples/digits_lr_grid.py --lr "$lr" --seed "$seed" \
    --epochs 30 --json "$OUT"
done
