"""Issue 13 across ranks: hostile payloads, refused calls and the state they leave behind.

Every test runs on every rank (1..5 ranks); the ones that need a second rank to misbehave skip
alone. After every refused or failed call the compressors must be exactly as before on every
rank, and their step counters identical across ranks: nothing silently diverges.
"""

from __future__ import annotations

import numpy as np
import pytest
from mpitools import assert_all, assert_equal_all, assert_same_on_all_ranks, rank_input

import mpicoll
from mpicoll import compression
from mpicoll.aggregation import sparse as sparse_path
from mpicoll.compression import ErrorFeedback
from mpicoll.compression.payload import HEADER, HEADER_BYTES
from mpicoll.errors import ArgumentError, ConfigError, MismatchError, PayloadError, PeerError

two_ranks = pytest.mark.skipif(mpicoll.size() < 2, reason="needs a second rank to misbehave")


@pytest.fixture(autouse=True)
def small_segments():
    with mpicoll.config.override(segment_bytes=4096):
        yield


def state_of(codec: compression.Compressor) -> dict:
    """Everything a compressed all-reduce may change, copied."""
    state = codec.state_dict()
    inner = state.get("inner", state)
    return {"steps": dict(inner["steps"]), "q": {k: v.copy() for k, v in inner.get("q", {}).items()},
            "residuals": {k: v.copy() for k, v in state.get("residuals", {}).items()},
            "bindings": dict(state.get("bindings", {}))}


def assert_unchanged(comm, codec, before: dict, what: str) -> None:
    """Collective: ``codec`` is exactly as ``before`` on every rank, and its steps agree across ranks."""
    after = state_of(codec)
    same = (after["steps"] == before["steps"] and after["bindings"] == before["bindings"]
            and all(set(after[part]) == set(before[part]) and all(np.array_equal(after[part][k], v)
                                                                    for k, v in before[part].items())
                    for part in ("q", "residuals")))
    assert_all(comm.mpi, same, f"{what}: compressor state changed by a call that raised")
    text = repr(sorted((repr(k), v) for k, v in after["steps"].items())).encode()
    assert_same_on_all_ranks(comm.mpi, np.frombuffer(text, np.uint8), f"{what}: step counters")


def raises_everywhere(comm, call, kinds, match: str = "") -> str:
    """Collective: ``call()`` raises one of ``kinds`` on every rank (text containing ``match``)."""
    try:
        call()
    except kinds as exc:
        text = f"{type(exc).__name__}: {exc}"
        assert_all(comm.mpi, match in text, text)
        return text
    assert_all(comm.mpi, False, "no error raised")
    return ""


def with_aux0(payload: np.ndarray, value: int) -> np.ndarray:
    fields = list(HEADER.unpack(bytes(payload[:HEADER_BYTES])))
    fields[6] = value
    bad = payload.copy()
    bad[:HEADER_BYTES] = np.frombuffer(HEADER.pack(*fields), np.uint8)
    return bad


def corrupt_compress(codec, monkeypatch, change) -> None:
    """Make ``codec.compress`` (on this rank) hand out ``change(payload)`` instead of its payloads."""
    real = codec.compress

    def compress(x, key=None, *, out=None):
        payload, ctx = real(x, key, out=out)
        return change(payload), ctx

    monkeypatch.setattr(codec, "compress", compress)


@two_ranks
@pytest.mark.parametrize("name", ["int8", "int4", "sign", "qsgd"])
def test_two_phase_refuses_a_flipped_block_size(comm, name, monkeypatch):
    """Break 2: rank 1's payloads say block 257 instead of 256: two-phase returned wrong sums on
    every rank; now every rank raises PayloadError and the compressor is as before."""
    codec = compression.get(name, block=256)
    x = rank_input(3000, comm.rank, "float32", "float", seed=5)
    mpicoll.compressed_allreduce(x, codec, key="w", comm=comm, algorithm="two_phase")
    before = state_of(codec)
    if comm.rank == 1:
        corrupt_compress(codec, monkeypatch, lambda payload: with_aux0(payload, 257))
    raises_everywhere(comm, lambda: mpicoll.compressed_allreduce(x, codec, key="w", comm=comm, algorithm="two_phase"),
                      PayloadError, "aux0=257")
    monkeypatch.undo()
    assert_unchanged(comm, codec, before, name)


def sparse_input(comm, n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng([7, comm.rank])
    x = np.zeros(n, np.float32)
    x[rng.choice(n, 40, replace=False)] = rng.integers(1, 9, 40)
    return x


@two_ranks
@pytest.mark.parametrize("lie", ["negative index", "index past the end", "unsorted", "more pairs than sent",
                                 "fewer pairs than sent", "dense claimed", "huge count"])
def test_sparse_rd_validates_what_peers_send(comm, lie, monkeypatch):
    """Break 4: a negative index gave wrong results that differed between ranks; an index past the
    end or a lying size hung. Now every rank raises PayloadError and nothing hangs."""
    x = sparse_input(comm)
    codec = compression.get("coo")
    if comm.rank == 1:
        real = sparse_path._pack

        def pack(state, numel):
            raw, nnz = real(state, numel)
            if not isinstance(state, tuple) or not nnz:
                return raw, nnz
            idx = state[0].copy()
            if lie in ("negative index", "index past the end", "unsorted"):
                idx[0] = {"negative index": -3, "index past the end": x.size + 5, "unsorted": idx[-1]}[lie]
                return real((idx, state[1]), numel)[0], nnz
            return raw, {"more pairs than sent": nnz + 3, "fewer pairs than sent": nnz - 1, "dense claimed": -1,
                         "huge count": 1 << 62}[lie]

        monkeypatch.setattr(sparse_path, "_pack", pack)
    before = state_of(codec)
    raises_everywhere(comm, lambda: mpicoll.compressed_allreduce(x, codec, key="s", comm=comm, algorithm="sparse_rd"),
                      PayloadError, "sparse_rd")
    monkeypatch.undo()
    assert_unchanged(comm, codec, before, lie)
    good = mpicoll.compressed_allreduce(x, codec, key="s", comm=comm, algorithm="sparse_rd", average=False)
    assert_same_on_all_ranks(comm.mpi, good, "the next call")


@two_ranks
def test_random_k_streams_must_agree(comm):
    """Break 5: ranks whose step counters or keys disagree got wrong results that differed between
    ranks; now MismatchError on every rank, and the refused call changes no state anywhere."""
    codec = compression.get("randomk", ratio=0.1)
    x = rank_input(1000, comm.rank, "float32", "float", seed=9)
    mpicoll.compressed_allreduce(x, codec, key="w", comm=comm)
    if comm.rank == 1:
        codec.compress(x, key="w")  # one extra local step: rank 1's stream runs ahead
    before = state_of(codec)
    raises_everywhere(comm, lambda: mpicoll.compressed_allreduce(x, codec, key="w", comm=comm), MismatchError,
                      "different random indices")
    assert_all(comm.mpi, state_of(codec)["steps"] == before["steps"], "steps changed")
    fresh = compression.get("randomk", ratio=0.1)
    before = state_of(fresh)
    raises_everywhere(comm, lambda: mpicoll.compressed_allreduce(x, fresh, key="w" if comm.rank else "v", comm=comm),
                      MismatchError, "random")
    assert_unchanged(comm, fresh, before, "keys that differ")


@two_ranks
@pytest.mark.parametrize("name", ["randomk", "int8", "powersgd", "topk"])
def test_a_call_refused_by_the_argument_check_changes_no_state(comm, name):
    """Break 5: a call refused by the agreement still advanced every compressor's step counter
    (and error-feedback residuals) on the ranks whose arguments were fine."""
    codec = ErrorFeedback(compression.get(name))
    x = rank_input(60 * 40, comm.rank, "float32", "float", seed=10).reshape(60, 40)
    mpicoll.compressed_allreduce(x, codec, key="w", comm=comm)
    before = state_of(codec)
    bad = x.astype(np.float64) if comm.rank == 1 else x
    raises_everywhere(comm, lambda: mpicoll.compressed_allreduce(bad, codec, key="w", comm=comm), MismatchError)
    assert_unchanged(comm, codec, before, f"{name}, dtype mismatch")
    raises_everywhere(comm, lambda: mpicoll.compressed_allreduce(x, codec, key="w", comm=comm,
                                                                  algorithm="bogus" if comm.rank == 1 else "auto"),
                      (PeerError, Exception))
    assert_unchanged(comm, codec, before, f"{name}, bad algorithm on rank 1")


FLOAT16_MEAN = [("none", {}, "ring"), ("none", {}, "two_phase"), ("fp16", {}, "ring"), ("fp16", {}, "rabenseifner"),
                ("bf16", {}, "ring"), ("randomk", {"ratio": 1.0}, "ring"), ("topk", {"ratio": 1.0}, "sparse_allgather"),
                ("topk", {"ratio": 1.0}, "sparse_rd"), ("coo", {}, "sparse_rd"), ("int8", {}, "two_phase"),
                ("int4", {}, "two_phase"), ("qsgd", {}, "two_phase"), ("sign", {}, "two_phase"),
                ("powersgd", {"rank": 1}, "powersgd")]


@pytest.mark.parametrize("name,params,algorithm", FLOAT16_MEAN)
def test_the_float16_mean_never_overflows(comm, name, params, algorithm):
    """Break 6: the mean of 3 x 30000 in float16 was inf for every codec (NaN for int8): the sum
    was rounded to float16 before the division."""
    x = np.full((40, 30), 30000, np.float16)
    got = mpicoll.compressed_allreduce(x, compression.get(name, **params), key="h", comm=comm, algorithm=algorithm)
    ok = (got.dtype == np.float16 and bool(np.isfinite(got).all()) and bool(np.allclose(got, 30000, rtol=0.5))
          and abs(float(got.astype(np.float64).mean()) - 30000) < 600)  # qsgd's rounding is random, unbiased
    assert_all(comm.mpi, ok, f"{name}/{algorithm}: {got.dtype} {got.reshape(-1)[:3]} mean {got.astype(float).mean()}")
    assert_same_on_all_ranks(comm.mpi, got, f"{name}/{algorithm}")


@pytest.mark.parametrize("algorithm", ["ring", "tree", "recursive_doubling", "rabenseifner"])
def test_none_equals_allreduce_for_float16_too(comm, algorithm):
    """Break 6: compressed ``none`` differed from ``allreduce`` in 22-32% of float16 elements."""
    x = rank_input(5001, comm.rank, "float16", "float", seed=12) * np.float16(300)
    for average, op in ((False, "sum"), (True, "avg")):
        got = mpicoll.compressed_allreduce(x, compression.get("none"), comm=comm, average=average, algorithm=algorithm)
        want = mpicoll.allreduce(x, op, comm=comm, algorithm=algorithm)
        assert_equal_all(comm.mpi, got, want, f"{op} with {algorithm}")


@pytest.mark.parametrize("name,algorithm", [("topk", "sparse_allgather"), ("powersgd", "powersgd"),
                                            ("int8", "two_phase"), ("fp16", "ring")])
def test_residuals_restored_at_another_world_size_are_refused(comm, name, algorithm):
    """Break 7: residuals saved by a job of another size silently dropped (or doubled) the other
    ranks' shares; every rank now refuses, and the state is as loaded."""
    x = rank_input(64 * 48, comm.rank, "float32", "float", seed=13).reshape(64, 48)
    ef = ErrorFeedback(compression.get(name))
    mpicoll.compressed_allreduce(x, ef, key="w", comm=comm, algorithm=algorithm)
    state = ef.state_dict()
    state["bindings"]["w"]["world_size"] = comm.size + 2  # as if a bigger job had saved them
    with pytest.raises(ArgumentError, match=f"saved by a job of {comm.size + 2} ranks"):
        ErrorFeedback(compression.get(name)).load_state_dict(state, world_size=comm.size)
    restored = ErrorFeedback(compression.get(name))
    restored.load_state_dict(state)
    before = state_of(restored)
    raises_everywhere(comm, lambda: mpicoll.compressed_allreduce(x, restored, key="w", comm=comm, algorithm=algorithm),
                      ArgumentError, f"over {comm.size + 2} ranks")
    assert_unchanged(comm, restored, before, name)


def test_two_phase_refuses_residuals_of_a_reshaped_tensor(comm):
    """Break 7: two-phase reused stored residuals for a reshaped tensor ((64,48) -> (48,64))."""
    x = rank_input(64 * 48, comm.rank, "float32", "float", seed=14).reshape(64, 48)
    ef = ErrorFeedback(compression.get("int8"))
    mpicoll.compressed_allreduce(x, ef, key="w", comm=comm, algorithm="two_phase")
    before = state_of(ef)
    raises_everywhere(comm, lambda: mpicoll.compressed_allreduce(x.reshape(48, 64), ef, key="w", comm=comm,
                                                                  algorithm="two_phase"), ArgumentError, "new key")
    assert_unchanged(comm, ef, before, "reshaped")


@two_ranks
@pytest.mark.parametrize("name,algorithm,method", [("int8", "two_phase", "decompress"),
                                                   ("topk", "sparse_allgather", "sparse_parts"),
                                                   ("randomk", "ring", "decompress"),
                                                   ("int8", "two_phase", "compress_owner"),
                                                   ("fp16", "ring", "wire_sum"),
                                                   ("powersgd", "powersgd", "orthonormalize")])
def test_any_exception_mid_protocol_is_agreed(comm, name, algorithm, method, monkeypatch):
    """Break 10: only PayloadError was caught inside compressed all-reduce; any other exception
    escaped mid-protocol on one rank and the others hung. Now every rank completes the protocol
    and raises PeerError naming the rank; the compressor is as before and the next call works."""
    codec = ErrorFeedback(compression.get(name))
    x = rank_input(3000, comm.rank, "float32", "float", seed=15)
    mpicoll.compressed_allreduce(x, codec, key="w", comm=comm, algorithm=algorithm)
    before = state_of(codec)
    if comm.rank == 1 and method in ("wire_sum", "orthonormalize"):  # inside the dense sum / between the sums
        from mpicoll.aggregation import lowrank, wire

        def fail(*args, **kwargs):
            raise MemoryError("injected failure")

        if method == "wire_sum":
            monkeypatch.setattr(wire.WireSum, "combine", fail)
        else:
            monkeypatch.setattr(lowrank, "orthonormalize", fail)
    elif comm.rank == 1:
        target = "compress" if method == "compress_owner" else method
        real = getattr(codec, target)
        calls = []

        def failing(payload, ctx, **kwargs):
            calls.append(ctx)
            if method == "sparse_parts" and len(calls) == 1:  # prepare checks this rank's own payload first
                return real(payload, ctx, **kwargs)
            raise MemoryError("injected failure")

        def failing_owner(x, key=None, **kwargs):
            if isinstance(key, tuple) and "owner" in key:
                raise MemoryError("injected failure")
            return real(x, key, **kwargs)

        monkeypatch.setattr(codec, target, failing_owner if target == "compress" else failing)
    raises_everywhere(comm, lambda: mpicoll.compressed_allreduce(x, codec, key="w", comm=comm, algorithm=algorithm),
                      PeerError, "rank 1 found")
    monkeypatch.undo()
    assert_unchanged(comm, codec, before, f"{name}/{method}")
    got = mpicoll.compressed_allreduce(x, codec, key="w", comm=comm, algorithm=algorithm)
    assert_same_on_all_ranks(comm.mpi, got, "the next call")


@two_ranks
def test_read_only_out_is_refused_in_the_agreement(comm):
    """Break 12: a read-only out= (or in-place read-only x) on one rank passed the agreement and
    failed mid-ring with BufferError; the others hung once it was caught."""
    x = rank_input(10000, comm.rank, "float32", "int")
    frozen = np.empty_like(x)
    frozen.flags.writeable = False
    out = frozen if comm.rank == 1 else np.empty_like(x)
    raises_everywhere(comm, lambda: mpicoll.allreduce(x, algorithm="ring", comm=comm, out=out),
                      (ArgumentError, PeerError), "read-only")
    y = x.copy()
    y.flags.writeable = comm.rank != 1
    raises_everywhere(comm, lambda: mpicoll.allreduce(y, algorithm="ring", comm=comm, out=y),
                      (ArgumentError, PeerError), "read-only")
    assert_same_on_all_ranks(comm.mpi, mpicoll.allreduce(x, comm=comm), "the next call")


@two_ranks
def test_powersgd_shapes_are_agreed(comm):
    """Break 13: PowerSGD with the same element count but another shape on one rank ended in MPI
    'Message truncated' instead of MismatchError."""
    x = rank_input(64 * 48, comm.rank, "float32", "float", seed=16).reshape((48, 64) if comm.rank == 1 else (64, 48))
    codec = compression.get("powersgd", rank=2)
    raises_everywhere(comm, lambda: mpicoll.compressed_allreduce(x, codec, key="w", comm=comm), MismatchError,
                      "different parts")


class ClaimsCupy:
    """An object whose type claims a cupy module (it is not a CuPy array)."""

    dtype = np.dtype(np.float32)
    shape = (10,)
    size = 10


ClaimsCupy.__module__ = "cupy._core.core"


@two_ranks
def test_an_object_claiming_cupy_on_one_rank_is_refused_everywhere(comm):
    """Break 13: an object whose type claims a cupy module failed outside the agreement."""
    x = ClaimsCupy() if comm.rank == 1 else np.ones(10, np.float32)
    raises_everywhere(comm, lambda: mpicoll.allreduce(x, comm=comm), (ArgumentError, PeerError), "NumPy or CuPy")
    raises_everywhere(comm, lambda: mpicoll.compressed_allreduce(x, compression.get("fp16"), comm=comm),
                      (ArgumentError, PeerError), "NumPy or CuPy")


@two_ranks
def test_a_host_layout_set_on_one_rank_only_is_refused_everywhere(comm):
    """Break 13: MPICOLL_HOST_LAYOUT differing between ranks failed (or hung) outside any agreement."""
    layout = f"1,{comm.size - 1}" if comm.rank == 0 else ""
    with mpicoll.config.override(host_layout=layout):
        raises_everywhere(comm, lambda: mpicoll.Comm(comm.mpi), ConfigError, "differs between ranks")
