#!/bin/sh
# The digits lr grid of bench/RESULTS.md ("Compressed SGD at the user's learning rate"): 4 ranks,
# every method of examples/digits_lr_grid.py per (seed, lr) launch; JSON lines appended to $OUT.
# Usage: sh bench/digits_grid.sh [OUT]   (about 1 h on 2 loaded cores)
OUT=${1:-bench/results/digits-lr-grid-4ranks.jsonl}
PY=${PYTHON:-.venv/bin/python}
MPIEXEC=${MPIEXEC:-.venv/bin/mpiexec}
for seed in 0 1 2; do
  for lr in 0.1 0.2 0.05 0.02; do
    timeout 1800 "$MPIEXEC" -n 4 "$PY" -W ignore -m mpi4py examples/digits_lr_grid.py --lr "$lr" --seed "$seed" \
      --epochs 30 --json "$OUT"
  done
done
