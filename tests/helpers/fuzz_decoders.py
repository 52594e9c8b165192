"""Property-based fuzzing of every codec's decoder (issue 13): hostile payloads end in PayloadError.

Run as a script (``python tests/helpers/fuzz_decoders.py --examples 300``); ``tests/unit/test_hostile_payloads.py``
runs it in the suite. For every example, hypothesis picks a codec, a tensor (size, shape, dtype,
values) and a mutation of the payload that codec made of it: a header field set to an edge value,
truncation or padding, flipped bits, overwritten bytes, or an index set out of range. The
receiver (the same codec, its own configuration) decodes it with each CPU kernel provider
(``numpy`` and ``numba-cpu``), through ``decompress`` and, for sparse codecs, ``sparse_parts``.

Every outcome must be either :class:`~mpicoll.errors.PayloadError` or an exact decode: the right
shape and dtype, and the same bits from both providers (two independent implementations of each
kernel). Never another exception, never a hang (faulthandler ends the process after
``--hang-seconds`` in one example), never an allocation beyond a bound proportional to what the
receiver expects: the address space is capped (``RLIMIT_AS``: the warmed-up process plus
``--headroom-mib``) and NumPy allocations are traced (``tracemalloc``: a decode's peak must stay
under ``ALLOC_FACTOR`` times the tensor's and payload's bytes, plus ``ALLOC_SLACK``).
"""

from __future__ import annotations

import argparse
import faulthandler
import resource
import sys
import time
import tracemalloc
from collections import Counter
from itertools import pairwise

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mpicoll
from mpicoll import compression
from mpicoll.compression.payload import HEADER, HEADER_BYTES
from mpicoll.errors import PayloadError

PROVIDERS = ("numpy", "numba-cpu")
ALLOC_FACTOR, ALLOC_SLACK = 16, 1 << 20
EDGES = [0, 1, 2, 7, 8, 255, 256, 257, 1 << 31, 1 << 32, (1 << 32) + 1, 1 << 40, 1 << 62, (1 << 63) - 1, 1 << 63,
         (1 << 64) - 1]
FIELDS = ("magic", "version", "wire_id", "dtype", "flags", "numel", "aux0", "aux1", "body")
CODECS = {  # name -> (parameters, needs a 2-D tensor)
    "none": ({}, False), "fp16": ({}, False), "bf16": ({}, False), "randomk": ({"ratio": 0.3}, False),
    "topk": ({"ratio": 0.2}, False), "topk_approx": ({"ratio": 0.2, "sample": 16}, False),
    "threshold": ({"tau": 0.5}, False), "coo": ({}, False), "csr": ({}, True),
    "int8": ({"block": 16}, False), "int4": ({"block": 8, "stochastic": True}, False),
    "qsgd": ({"levels": 5, "block": 32}, False), "sign": ({}, False), "sign_block": ({"block": 24}, False),
    "powersgd": ({"rank": 2}, True),
}
outcomes: Counter = Counter()


def codec_of(name: str) -> compression.Compressor:
    params, _ = CODECS[name]
    return compression.get("sign" if name == "sign_block" else name, **params)


def tensor(name: str, size: int, cols: int, dtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(size).astype(dtype)
    x[rng.random(size) < 0.6] = 0  # mostly zero: the sparse codecs send few pairs
    return x.reshape(-1, cols) if CODECS[name][1] and size % cols == 0 and size else x


def mutate(payload: np.ndarray, how: tuple, itemsize: int) -> np.ndarray:
    kind = how[0]
    raw = payload.copy()
    if kind == "field":
        _, field, value = how
        fields = list(HEADER.unpack(bytes(raw[:HEADER_BYTES])))
        index = FIELDS.index(field)
        fields[index] = {"magic": b"XXXX", "version": value % 256, "wire_id": value % 256, "dtype": value % 256,
                         "flags": value % 256}.get(field, value % (1 << 64))
        raw[:HEADER_BYTES] = np.frombuffer(HEADER.pack(*fields), np.uint8)
    elif kind == "truncate":
        raw = raw[: how[1] % (raw.size + 1)].copy()
    elif kind == "pad":
        raw = np.concatenate([raw, np.full(how[1], 0xAB, np.uint8)])
    elif kind == "flip" and raw.size > HEADER_BYTES:
        for position in how[1]:
            bit = position % (8 * (raw.size - HEADER_BYTES))
            raw[HEADER_BYTES + bit // 8] ^= np.uint8(1 << (bit % 8))
    elif kind == "overwrite" and raw.size > HEADER_BYTES:
        start = HEADER_BYTES + how[1] % (raw.size - HEADER_BYTES)
        raw[start: start + how[2]] = how[3]
    elif kind == "index" and raw.size >= HEADER_BYTES + 8:  # the first sections hold indices in sparse codecs
        slot, value = how[1], how[2]
        width = 4 if raw[7] & 1 else 8
        count = (raw.size - HEADER_BYTES) // width
        at = HEADER_BYTES + width * (slot % max(count, 1))
        raw[at: at + width] = np.frombuffer(int(value % (1 << 64)).to_bytes(8, "little")[:width], np.uint8)
    return raw


def decode_all(codec: compression.Compressor, payload: np.ndarray, ctx: compression.Ctx, budget: int) -> list:
    """Each provider's decode (and sparse parts): ``None`` for PayloadError; anything else raises."""
    results = []
    tracemalloc.start()  # only around the decodes: tracing everything would slow hypothesis down
    try:
        for provider in PROVIDERS:
            results.extend(decode_with(provider, codec, payload, ctx, budget))
    finally:
        tracemalloc.stop()
    return results


def decode_with(provider: str, codec: compression.Compressor, payload: np.ndarray, ctx: compression.Ctx,
                budget: int) -> list:
    """Decode (and, for sparse codecs, split into parts) with one provider, allocations traced."""
    results = []
    steps = [codec.decompress] + ([codec.sparse_parts] if codec.kind == "sparse" else [])
    with mpicoll.config.override(kernel_providers=provider):
        for step in steps:
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            try:
                got = step(payload, ctx)
            except PayloadError:
                got = None
            peak = tracemalloc.get_traced_memory()[1] - start
            assert peak <= budget, f"{codec.name} {provider} {step.__name__} allocated {peak} bytes > {budget}"
            results.append(got)
    return results


SPARSE = ("topk", "topk_approx", "threshold", "coo")


def read_sections(raw: np.ndarray, spec: list[tuple[str, int]]) -> list[np.ndarray]:
    """The sections ``spec`` of a payload, read plainly (8-byte aligned, after the header)."""
    views, offset = [], HEADER_BYTES
    for dtype, count in spec:
        nbytes = np.dtype(dtype).itemsize * count
        views.append(raw[offset: offset + nbytes].view(dtype))
        offset = (offset + nbytes + 7) & ~7
    return views


def direct_decode(name: str, raw: np.ndarray, ctx: compression.Ctx) -> np.ndarray | None:
    """What a decode of an (index, value) payload must give, read with plain loops, independently of
    the codecs' own checks; ``None`` when the payload is invalid (so a decode must have refused)."""
    _, _, _, _, flags, _, nnz, _, _ = HEADER.unpack(bytes(raw[:HEADER_BYTES]))
    itype = np.uint32 if flags & 1 else np.int64
    if name in SPARSE:
        idx, values = read_sections(raw, [(itype, nnz), (ctx.dtype, nnz)])
        idx = [int(i) for i in idx]
        if any(not 0 <= i < ctx.numel for i in idx) or any(b <= a for a, b in pairwise(idx)):
            return None
        dense = np.zeros(ctx.numel, ctx.dtype)
        for i, v in zip(idx, values, strict=True):
            dense[i] += v  # scatter-add into zeros: -0.0 arrives as +0.0
        return dense.reshape(ctx.shape)
    rows, cols = ctx.shape
    indptr, indices, values = read_sections(raw, [(itype, rows + 1), (itype, nnz), (ctx.dtype, nnz)])
    dense = np.zeros(ctx.shape, ctx.dtype)
    for r in range(rows):
        columns = [int(c) for c in indices[int(indptr[r]): int(indptr[r + 1])]]
        if any(not 0 <= c < cols for c in columns) or any(b <= a for a, b in pairwise(columns)):
            return None
        for c, v in zip(columns, values[int(indptr[r]): int(indptr[r + 1])], strict=True):
            dense[r, c] = v
    return dense


def same_bits(a, b) -> bool:
    """The same bits, except that any NaN equals any NaN: a corrupted scale can be a NaN, and which
    NaN (sign, payload) a product with it gives is not part of the kernels' contract."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and all(same_bits(x, y) for x, y in zip(a, b, strict=True))
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind != "f":
        return a.tobytes() == b.tobytes()
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    return bool((nan_a == nan_b).all()) and a[~nan_a].tobytes() == b[~nan_b].tobytes()


MUTATIONS = st.one_of(
    st.tuples(st.just("none")),
    st.tuples(st.just("field"), st.sampled_from(FIELDS), st.sampled_from(EDGES) | st.integers(0, (1 << 64) - 1)),
    st.tuples(st.just("field"), st.sampled_from(("numel", "aux0", "aux1", "body")), st.integers(0, 600)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16)),
    st.tuples(st.just("pad"), st.integers(1, 64)),
    st.tuples(st.just("flip"), st.lists(st.integers(0, 1 << 20), min_size=1, max_size=8)),
    st.tuples(st.just("overwrite"), st.integers(0, 1 << 16), st.integers(1, 16),
              st.sampled_from([0, 0xFF, 0x80, 0x7F])),
    st.tuples(st.just("index"), st.integers(0, 1 << 10), st.sampled_from(EDGES) | st.integers(-600, 600)),
)


@given(name=st.sampled_from(sorted(CODECS)), size=st.integers(0, 300), cols=st.sampled_from([1, 3, 8, 10]),
       dtype=st.sampled_from(["float32", "float16", "float64"]), seed=st.integers(0, 1 << 30), how=MUTATIONS)
def check_one(name: str, size: int, cols: int, dtype: str, seed: int, how: tuple) -> None:
    codec = codec_of(name)
    x = tensor(name, size, cols, dtype, seed)
    if name == "csr" and x.ndim != 2:
        x = x.reshape(1, -1)
    payload, ctx = codec.compress(x, key="w")
    bad = mutate(payload, how, x.dtype.itemsize)
    budget = ALLOC_FACTOR * (x.nbytes + 8 * x.size + bad.size) + ALLOC_SLACK
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    results = decode_all(codec, bad, ctx, budget)
    faulthandler.cancel_dump_traceback_later()
    accepted = [r for r in results if r is not None]
    assert len(accepted) in (0, len(results)), f"{name}: some providers refused, others decoded ({how})"
    outcomes["decoded" if accepted else "PayloadError"] += 1
    if accepted:
        dense = accepted[0]
        assert dense.shape == x.shape and dense.dtype == x.dtype, (name, dense.shape, dense.dtype)
        changed = how[0] == "field" and bytes(bad[:HEADER_BYTES]) != bytes(payload[:HEADER_BYTES])
        assert not changed, f"{name}: decoded a payload whose header {how[1]} differs from what this receiver writes"
        if name in (*SPARSE, "csr"):
            expected = direct_decode(name, bad, ctx)
            assert expected is not None, f"{name}: decoded a payload with indices outside the tensor ({how})"
            assert same_bits(dense, expected), f"{name}: decode differs from a plain reading of the payload ({how})"
        step_count = 2 if codec.kind == "sparse" else 1
        for i in range(step_count, len(accepted), step_count):  # provider against provider, step by step
            for j in range(step_count):
                assert same_bits(accepted[j], accepted[i + j]), f"{name}: providers decode differently ({how})"
        if how == ("none",) and codec.lossless:
            assert same_bits(dense, x), f"{name}: lossless decode differs from the input"


HANG_SECONDS = 30.0


def cap_address_space(headroom_mib: int) -> int:
    """Warm every kernel up (JIT), then cap the address space a little above what is mapped now."""
    for name in CODECS:  # compile every kernel of every provider once, before the cap
        codec = codec_of(name)
        for provider in PROVIDERS:
            with mpicoll.config.override(kernel_providers=provider):
                for dtype in ("float32", "float16", "float64"):
                    x = tensor(name, 60, 3, dtype, 1)
                    payload, ctx = codec.compress(x, key="w")
                    codec.decompress(payload, ctx)
                    if codec.kind == "sparse":
                        codec.sparse_parts(payload, ctx)
    with open("/proc/self/status") as status:
        mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    limit = mapped + (headroom_mib << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


def main(argv: list[str]) -> int:
    global HANG_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--headroom-mib", type=int, default=512)
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--random", action="store_true", help="draw new examples (default: derandomized)")
    args = parser.parse_args(argv)
    HANG_SECONDS = args.hang_seconds
    start = time.monotonic()
    limit = cap_address_space(args.headroom_mib)
    warm = time.monotonic() - start
    run = settings(max_examples=args.examples, derandomize=not args.random, database=None, deadline=None,
                   suppress_health_check=list(HealthCheck), print_blob=True)(check_one)
    run()
    print(f"fuzz_decoders: {sum(outcomes.values())} cases x {len(PROVIDERS)} providers in "
          f"{time.monotonic() - start - warm:.0f} s (+{warm:.0f} s warm-up), address space capped at "
          f"{limit >> 20} MiB: "
          f"{outcomes['decoded']} exact decodes, {outcomes['PayloadError']} PayloadError, nothing else", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
