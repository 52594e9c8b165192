"""Issue 13: decoders trust nothing they can know themselves; compressor state survives refused calls.

Single-process tests of the breaks that live in the compressors (2, 3, 7, 9), on both CPU kernel
providers, plus the property-based fuzzer of every decoder (``tests/helpers/fuzz_decoders.py``) run in a
subprocess under an address-space cap.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mpicoll
from mpicoll import compression
from mpicoll.compression import ErrorFeedback
from mpicoll.compression.payload import HEADER, HEADER_BYTES
from mpicoll.errors import ArgumentError, PayloadError

PROVIDERS = ["numpy", "numba-cpu"]
FIELDS = ("magic", "version", "wire_id", "dtype", "flags", "numel", "aux0", "aux1", "body")


@pytest.fixture(params=PROVIDERS)
def provider(request):
    with mpicoll.config.override(kernel_providers=request.param):
        yield request.param


def with_field(payload: np.ndarray, field: str, value: int) -> np.ndarray:
    fields = list(HEADER.unpack(bytes(payload[:HEADER_BYTES])))
    fields[FIELDS.index(field)] = value
    out = payload.copy()
    out[:HEADER_BYTES] = np.frombuffer(HEADER.pack(*fields), np.uint8)
    return out


QUANTIZED = [("int8", {"block": 256}, "aux0", 257), ("int4", {"block": 256}, "aux0", 257),
             ("sign", {"block": 256}, "aux0", 257), ("qsgd", {"block": 256}, "aux0", 257),
             ("qsgd", {"levels": 127}, "aux1", 5), ("int8", {}, "aux1", 4)]


@pytest.mark.parametrize("name,params,field,value", QUANTIZED)
def test_quantized_decoders_use_their_own_block_and_levels(provider, name, params, field, value):
    """Break 2: a one-bit flip of the header's block size (256 -> 257) or qsgd's levels decoded
    other values instead of failing."""
    codec = compression.get(name, **params)
    payload, ctx = codec.compress(np.random.default_rng(0).standard_normal(1000).astype(np.float32), key="w")
    with pytest.raises(PayloadError, match=f"{field}={value}"):
        codec.decompress(with_field(payload, field, value), ctx)


@pytest.mark.parametrize("block", [1 << 62, (1 << 64) - 1, 1 << 31, 0])
@pytest.mark.parametrize("name", ["int8", "int4", "sign", "qsgd"])
def test_a_huge_header_block_is_refused_at_once(provider, name, block):
    """Break 9: one scale plus a huge block made np.repeat allocate gigabytes, and numba-cpu loop forever."""
    codec = compression.get(name)
    payload, ctx = codec.compress(np.ones(10, np.float32), key="w")
    start = time.monotonic()
    with pytest.raises(PayloadError):
        codec.decompress(with_field(payload, "aux0", block), ctx)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("name", compression.names())
@pytest.mark.parametrize("field", ["numel", "aux0", "aux1", "body", "flags", "dtype"])
@pytest.mark.parametrize("value", [(1 << 64) - 1, 1 << 63, 1 << 32])
def test_every_header_field_at_its_limits_is_a_payload_error(provider, name, field, value):
    """Break 9: other header values raised OverflowError / ValueError / MemoryError."""
    codec = compression.get(name)
    x = np.random.default_rng(1).standard_normal((12, 10)).astype(np.float32)
    payload, ctx = codec.compress(x, key="w")
    small = {"flags": 255, "dtype": 255}.get(field)
    with pytest.raises(PayloadError):
        codec.decompress(with_field(payload, field, small if small is not None else value), ctx)


def csr_payload(columns: list[int]) -> tuple[compression.Compressor, np.ndarray, compression.Ctx]:
    codec = compression.get("csr")
    x = np.zeros((3, 4), np.float32)
    x[0, 1], x[0, 2], x[1, 0] = 1, 2, 3  # nonzeros: row 0 columns 1, 2; row 1 column 0
    payload, ctx = codec.compress(x, key="w")
    header = HEADER.unpack(bytes(payload[:HEADER_BYTES]))
    width = 4 if header[4] & 1 else 8
    start = HEADER_BYTES + ((4 * width + 7) & ~7)  # after the 4 row pointers
    bad = payload.copy()
    for i, col in enumerate(columns):
        bad[start + width * i: start + width * (i + 1)] = np.frombuffer((col % (1 << 64)).to_bytes(8, "little")[:width],
                                                                        np.uint8)
    return codec, bad, ctx


@pytest.mark.parametrize("columns", [[1, 5, 0], [1, 4, 0], [-1, 2, 0], [1, 2, (1 << 32) - 1], [2, 1, 0]])
def test_csr_column_indices_outside_the_row_are_refused(provider, columns):
    """Break 3: column 5 of a 4-column row passed (the flat position still increased) and numba-cpu
    wrote into the next row; negative columns landed elsewhere than checked."""
    codec, bad, ctx = csr_payload(columns)
    with pytest.raises(PayloadError):
        codec.decompress(bad, ctx)
    codec, good, ctx = csr_payload([1, 2, 0])
    assert codec.decompress(good, ctx)[0, 1] == 1


def test_error_feedback_refuses_residuals_of_another_world_size_or_shape():
    """Break 7 (the compressor side; tests/mpi/test_hostile.py runs it across ranks)."""
    ef = ErrorFeedback(compression.get("topk", ratio=0.1))
    ef.bind("w", (64, 48), 4)
    ef.compress(np.ones((64, 48), np.float32), key="w")
    state = ef.state_dict()
    assert state["bindings"]["w"] == {"shape": [64, 48], "world_size": 4}
    with pytest.raises(ArgumentError, match="saved by a job of 4 ranks, this one has 2"):
        ErrorFeedback(compression.get("topk", ratio=0.1)).load_state_dict(state, world_size=2)
    restored = ErrorFeedback(compression.get("topk", ratio=0.1))
    restored.load_state_dict(state)
    with pytest.raises(ArgumentError, match="over 4 ranks; this call is shape"):
        restored.bind("w", (64, 48), 2)
    with pytest.raises(ArgumentError, match=r"shape \(64, 48\)"):
        restored.bind("w", (48, 64), 4)
    restored.bind("w", (64, 48), 4)  # the job that saved them: fine


@pytest.mark.parametrize("name", ["randomk", "powersgd", "topk"])
def test_snapshot_and_restore_undo_a_call(name):
    ef = ErrorFeedback(compression.get(name))
    x = np.random.default_rng(2).standard_normal((30, 20)).astype(np.float32)
    ef.compress(x, key="w")
    before = ef.state_dict()
    snapshot = ef.snapshot()
    ef.bind("v", x.shape, 3)
    ef.compress(x, key="w")
    ef.compress(x, key="v")
    ef.restore(snapshot)
    after = ef.state_dict()
    assert after["inner"]["steps"] == before["inner"]["steps"] and after["bindings"] == before["bindings"]
    assert set(after["residuals"]) == set(before["residuals"])
    for key, value in before["residuals"].items():
        assert np.array_equal(after["residuals"][key], value)


FUZZ = Path(__file__).resolve().parents[1] / "helpers" / "fuzz_decoders.py"


@pytest.mark.slow  # a subprocess fuzzing 300 examples on two providers
def test_fuzzed_decoders_give_exact_decodes_or_payload_errors():
    """The property-based fuzzer of every decoder, both CPU providers, under an address-space cap
    (a few hundred derandomized examples here; bench/RESULTS.md records a long run)."""
    result = subprocess.run([sys.executable, str(FUZZ), "--examples", "300"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-10000:]
    assert "nothing else" in result.stdout, result.stdout
