"""Sign's decode of a 16 MiB payload: alone, and three decode + add rounds into a fresh ``np.zeros``
total with a fresh array per decode (the paths before the fix) against one reused array (after),
side by side in one process (bench/RESULTS.md, issue 17). Run pinned to one core:
``NUMBA_NUM_THREADS=1 taskset -c 1 python decode_faults.py``."""

import time

import numpy as np

from mpicoll.compression import get

x = np.random.default_rng(0).standard_normal(4 << 20).astype(np.float32)
codec = get("sign")
payload, ctx = codec.compress(x, key="k")
scratch = np.empty(x.size, np.float32)


def timed(label, fn, n=20):
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    print(f"{label:45s} {(time.perf_counter() - start) / n * 1e3:7.2f} ms")


def rounds(out):
    total = np.zeros(x.size, np.float32)
    for _ in range(3):
        total += codec.decompress(payload, ctx, out=out)


timed("one decode", lambda: codec.decompress(payload, ctx))
timed("3 x (decode + add), a fresh array per decode", lambda: rounds(None))
timed("3 x (decode + add), one reused array", lambda: rounds(scratch))
