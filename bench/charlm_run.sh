#!/bin/sh
# The character-level LM comparison of bench/RESULTS.md ("1-bit Adam on a character LM"): 4 ranks,
# 600 steps; JSON lines appended to $OUT (about 20 min on 2 loaded cores). Then:
#   python bench/accuracy_tables.py charlm $OUT
OUT=${1:-bench/results/charlm-4ranks.jsonl}
PY=${PYTHON:-.venv/bin/python}
MPIEXEC=${MPIEXEC:-.venv/bin/mpiexec}
run() { timeout 3600 "$MPIEXEC" -n 4 "$PY" -W ignore -m mpi4py examples/train_charlm.py --steps 600 --json "$OUT" "$@"; }
run --methods adam,onebit,topk,sign,powersgd --freeze 60 --sign-block 0   # OneBitAdam: one sign scale per chunk
run --methods onebit --freeze 60 --sign-block 256                         # one scale per 256 elements (default)
run --methods onebit --freeze 40 --sign-block 256                         # shorter warm-up: aiming at 10x
