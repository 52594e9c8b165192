"""Pure helpers: block partitions, pipeline segments, reduction ops, scratch buffers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpicoll.collectives.ops import get_op, op_names, work_dtype
from mpicoll.collectives.partition import check_counts, displacements, even_counts, segments
from mpicoll.errors import ArgumentError, DtypeError, UnsupportedError
from mpicoll.transport.scratch import ScratchPool, size_class


@given(st.integers(0, 10**6), st.integers(1, 64))
def test_even_counts_cover_and_balance(count, parts):
    counts = even_counts(count, parts)
    assert len(counts) == parts and sum(counts) == count
    assert max(counts) - min(counts) <= 1
    assert counts == sorted(counts, reverse=True)
    assert displacements(counts) == [sum(counts[:i]) for i in range(parts)]


@given(st.integers(0, 5000), st.integers(1, 700))
def test_segments_tile_the_range(count, step):
    segs = segments(count, step)
    assert [lo for lo, _ in segs] == list(range(0, count, step))
    assert all(0 < hi - lo <= step for lo, hi in segs)
    assert (segs[-1][1] if segs else 0) == count


def test_check_counts():
    assert check_counts(None, 3, "x") is None
    assert check_counts(np.array([1, 2, 0]), 3, "x") == [1, 2, 0]
    with pytest.raises(ArgumentError, match="2 entries but the communicator has 3 ranks"):
        check_counts([1, 2], 3, "reduce_scatter")
    with pytest.raises(ArgumentError, match="non-negative"):
        check_counts([1, -2, 3], 3, "x")


def test_ops():
    assert op_names() == ["sum", "prod", "min", "max", "avg", "band", "bor", "bxor"]
    out = np.zeros(3)
    get_op("max").combine(np.array([1.0, 5.0, -1.0]), np.array([2.0, 4.0, -3.0]), out)
    np.testing.assert_array_equal(out, [2.0, 5.0, -1.0])
    with pytest.raises(UnsupportedError, match=r"'xor'.*'sum', 'prod', 'min', 'max', 'avg', 'band', 'bor' or 'bxor'"):
        get_op("xor")
    with pytest.raises(DtypeError, match="avg divides"):
        get_op("avg").check_dtype(np.int32, "allreduce")
    with pytest.raises(DtypeError, match="integer bits"):
        get_op("bxor").check_dtype(np.float32, "allreduce")
    with pytest.raises(DtypeError, match="does not accept dtype uint8"):
        get_op("sum").check_dtype(np.uint8, "allreduce")
    assert work_dtype(np.dtype(np.float16)) == np.float32
    assert work_dtype(np.dtype(np.int32)) == np.int32


def test_scratch_pool_reuses_and_grows():
    pool = ScratchPool()
    a = pool.get("slot", 1100, np.float32)
    assert a.shape == (1100,) and a.dtype == np.float32
    b = pool.get("slot", 1500, np.float32)  # same size class (8 KiB): same memory
    assert np.shares_memory(a, b)
    c = pool.get("slot", 10**6, np.float64)  # grows: new memory
    assert not np.shares_memory(a, c) and c.nbytes == 8 * 10**6
    assert not np.shares_memory(c, pool.get("other", 10, np.float64))
    assert pool.nbytes == size_class(8 * 10**6) + size_class(80)
    pool.clear()
    assert pool.nbytes == 0
    assert size_class(1) == 4096 and size_class(5000) == 8192 and size_class(8192) == 8192
