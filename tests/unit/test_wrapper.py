"""A compressor wrapper forwards the whole protocol: nothing falls back on the base class's default."""

from __future__ import annotations

import inspect

import numpy as np

from mpicoll.compression import Compressor, ErrorFeedback, get
from mpicoll.compression.wrapper import Wrapper

#: what the protocol leaves to each codec, not to a wrapper: its own kernels and payload layout
INTERNAL = {"next_step", "header_of", "kernel"}


def protocol() -> set[str]:
    return {name for name, _ in inspect.getmembers(Compressor) if not name.startswith("_")} - INTERNAL


def test_the_wrapper_overrides_every_public_member_of_the_protocol():
    missing = sorted(name for name in protocol() if name not in vars(Wrapper))
    assert not missing, f"Wrapper leaves these to the base class's defaults: {missing}"


def test_traits_and_sizes_come_from_the_innermost_codec():
    inner = get("fp16")
    wrapped = Wrapper(ErrorFeedback(inner))
    for trait in ("name", "wire_id", "kind", "lossless", "narrow_range"):
        assert getattr(wrapped, trait) == getattr(inner, trait), trait
    assert wrapped.narrow_range  # the fp16 sums' prescaling depends on it
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    payload, ctx = wrapped.compress(x, key="k")
    assert payload.nbytes == inner.payload_nbytes(x) == wrapped.payload_nbytes(x) <= wrapped.payload_bound(ctx)
    np.testing.assert_array_equal(wrapped.decompress(payload, ctx), inner.decompress(payload, ctx))
