"""The kernel operations are declared once (kernels/ops.py); every provider fills in that table.

The declared argument checks run in front of every provider's code, so a bad argument is refused
with the same ``ValueError`` whichever provider runs it (and before a compiled kernel could read
past an input).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from mpicoll.kernels import ops
from mpicoll.kernels import reference as ref

PROVIDERS = {"numpy": ref.OPS}
try:
    from mpicoll.kernels import numba_cpu

    PROVIDERS["numba-cpu"] = numba_cpu.OPS
except ImportError:  # numba not installed: the reference alone
    pass

X = np.arange(5, dtype=np.float32)
BAD = [
    ("topk", (X, 6), "0 <= k <= n"),
    ("topk", (X, -1), "0 <= k <= n"),
    ("stratified_indices", (1, 3, 4), "0 <= k <= n"),
    ("quantize", (X, 2, 4, "max", 1, False, 0), "bits must be 4 or 8"),
    ("quantize", (X, 8, 0, "max", 127, False, 0), "block must be >= 1"),
    ("quantize", (X, 8, 4, "median", 127, False, 0), "unknown scale kind"),
    ("dequantize", (np.zeros(2, np.uint8), np.ones(2, np.float32), 5, 8, 4), "packed holds 2"),
    ("dequantize", (np.zeros(5, np.uint8), np.ones(1, np.float32), 5, 8, 4), "scales holds 1"),
    ("sign_pack", (X, 0), "block must be >= 1"),
    ("sign_unpack", (np.zeros(1, np.uint8), np.ones(1, np.float32), 9, 8), "packed holds 1"),
    ("lowrank_reconstruct", (np.ones((2, 1), np.float32), np.ones((2, 1), np.float32), 5), "cannot give 5"),
]


def test_every_provider_has_the_declared_operations_in_order():
    for name, table in PROVIDERS.items():
        assert list(table) == list(ops.OPERATIONS), name


def test_implementations_take_the_declared_parameters():
    with pytest.raises(TypeError, match="takes"):
        ops.implements("topk")(lambda x, count: None)


def test_a_provider_missing_an_operation_is_refused():
    module = types.ModuleType("partial_provider")
    module.topk = ops.implements("topk")(lambda x, k: None)
    with pytest.raises(TypeError, match="lacks"):
        ops.collect("partial", [module])


@pytest.mark.parametrize("provider", list(PROVIDERS))
@pytest.mark.parametrize("op,args,match", BAD, ids=[f"{op}-{i}" for i, (op, _, _) in enumerate(BAD)])
def test_bad_arguments_are_refused_the_same_everywhere(provider, op, args, match):
    with pytest.raises(ValueError, match=match):
        PROVIDERS[provider][op](*args)


@pytest.mark.parametrize("scale_kind", ["l2", "mean"])
def test_reference_block_scales_take_memory_in_proportion_to_the_input(scale_kind):
    """The reference (the provider of a default install, without numba) once padded every block
    to a 65536-element reduction chunk: quantize with l2 scales on 1M elements allocated 2 GiB,
    and on 64M elements failed with a 128 GiB MemoryError."""
    import tracemalloc

    x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    tracemalloc.start()
    try:
        if scale_kind == "l2":
            ref.quantize(x, 4, 256, "l2", 7, False, 0)
        else:
            ref.sign_pack(x, 4096)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * x.nbytes, f"peak {peak >> 20} MiB for a {x.nbytes >> 20} MiB input"
