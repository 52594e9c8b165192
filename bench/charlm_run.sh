#!/bin/sh
# The character-level LM comparison of bench/RESULTS.md ("1-bit Adam on a character LM"): 4 ranks,
# 600 steps, OneBitAdam freezing the variance after 60 steps; JSON lines appended to $OUT.
OUT=${1:-bench/results/charlm-4ranks.jsonl}
PY=${PYTHON:-.venv/bin/python}
MPIEXEC=${MPIEXEC:-.venv/bin/mpiexec}
timeout 3600 "$MPIEXEC" -n 4 "$PY" -W ignore -m mpi4py examples/train_charlm.py --steps 600 --freeze 60 --json "$OUT"
