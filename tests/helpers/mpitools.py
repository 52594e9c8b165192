"""Helpers for tests that run on every rank: collective verdicts and reproducible inputs."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from mpi4py import MPI

WORLD = MPI.COMM_WORLD


def assert_all(comm: MPI.Comm, ok: bool, message: str = "") -> None:
    """Assert ``ok`` on every rank; all ranks fail together, naming the ranks where it was false.

    Every rank must call it, so a failure on one rank never leaves the others waiting.
    """
    failures = comm.allgather(None if ok else message)
    bad = {rank: msg for rank, msg in enumerate(failures) if msg is not None}
    if bad:
        details = "; ".join(f"rank {rank}: {msg}" for rank, msg in bad.items())
        raise AssertionError(f"failed on {len(bad)} of {comm.Get_size()} rank(s): {details}")


def raises_everywhere(comm: Any, exc_type: type[BaseException], fn: Any, *match: str) -> str:
    """Collective: ``fn()`` raises ``exc_type`` on every rank, with every ``match`` text in the
    message; a :class:`mpicoll.MismatchError` must also read the same, word for word, everywhere.
    ``comm`` is an :class:`mpicoll.Comm`. Returns this rank's message."""
    from mpicoll.errors import MismatchError

    try:
        fn()
    except exc_type as exc:
        text = str(exc)
        missing = [m for m in match if m not in text]
        assert_all(comm.mpi, not missing, f"message lacks {missing}: {text}")
        if issubclass(exc_type, MismatchError):
            texts = comm.mpi.allgather(text)
            assert_all(comm.mpi, len(set(texts)) == 1, f"messages differ between ranks: {texts}")
        return text
    except Exception as exc:  # any other type is a failure, reported collectively
        assert_all(comm.mpi, False, f"raised {type(exc).__name__}: {exc}")
    else:
        assert_all(comm.mpi, False, f"did not raise {exc_type.__name__}")
    return ""


def assert_equal_all(comm: MPI.Comm, got: Any, want: Any, what: str = "result") -> None:
    """Collective: ``got`` equals ``want`` exactly (same dtype, shape and values) on every rank."""
    got = np.asarray(got)
    want = np.asarray(want)
    ok = got.dtype == want.dtype and got.shape == want.shape and bool(np.array_equal(got, want))
    message = ""
    if not ok:
        if got.shape == want.shape and got.size:
            bad = np.flatnonzero(got.reshape(-1) != want.reshape(-1))
            first = int(bad[0]) if bad.size else -1
            message = (f"{what}: {bad.size} of {got.size} elements differ; first at {first}: "
                       f"got {got.reshape(-1)[first]!r}, want {want.reshape(-1)[first]!r}")
        else:
            message = f"{what}: got {got.dtype}{got.shape}, want {want.dtype}{want.shape}"
    assert_all(comm, ok, message)


def assert_close_all(comm: MPI.Comm, got: Any, want: Any, rtol: float, atol: float, what: str = "result") -> None:
    """Collective: ``got`` is within tolerance of the float64 reference ``want`` on every rank."""
    got64 = np.asarray(got, dtype=np.float64)
    ok = got64.shape == np.shape(want) and bool(np.allclose(got64, want, rtol=rtol, atol=atol))
    message = "" if ok else f"{what}: max abs error {np.max(np.abs(got64 - want)) if got64.size else 0}"
    assert_all(comm, ok, message)


def assert_same_on_all_ranks(comm: MPI.Comm, array: Any, what: str = "result") -> None:
    """Collective: ``array`` is bitwise identical on every rank."""
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    digests = comm.allgather(digest)
    differing = [r for r, d in enumerate(digests) if d != digests[0]]
    assert_all(comm, not differing, f"{what} differs bitwise from rank 0 on ranks {differing}")


def rank_input(count: int, rank: int, dtype: Any, kind: str = "int", seed: int = 0) -> np.ndarray:
    """Rank ``rank``'s input: small integers (exact in any order) or random floats."""
    rng = np.random.default_rng([seed, rank, count])
    if kind == "int":
        return rng.integers(-8, 9, size=count).astype(dtype)
    if kind == "prod":
        return rng.choice(np.array([1, 1, 1, -1, 2]), size=count).astype(dtype)
    return rng.standard_normal(count).astype(dtype)


def all_inputs(count: int, nranks: int, dtype: Any, kind: str = "int", seed: int = 0) -> list[np.ndarray]:
    """Every rank's :func:`rank_input` (each rank can compute the reference locally)."""
    return [rank_input(count, r, dtype, kind, seed) for r in range(nranks)]


REFERENCE_UFUNC = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum, "avg": np.add}


def reference(inputs: list[np.ndarray], op: str) -> np.ndarray:
    """The float64 reduction of ``inputs`` (``avg`` divided by the rank count)."""
    acc = inputs[0].astype(np.float64)
    for x in inputs[1:]:
        acc = REFERENCE_UFUNC[op](acc, x.astype(np.float64))
    if op == "avg":
        acc = acc / len(inputs)
    return acc


def mpi_allreduce(comm: MPI.Comm, x: np.ndarray, op: str) -> np.ndarray:
    """``MPI_Allreduce`` of ``x`` (float16 via float32, as mpicoll accumulates it)."""
    mpi_op = {"sum": MPI.SUM, "prod": MPI.PROD, "min": MPI.MIN, "max": MPI.MAX, "avg": MPI.SUM}[op]
    work = x.astype(np.float32) if x.dtype == np.float16 else x.copy()
    out = np.empty_like(work)
    comm.Allreduce(work, out, mpi_op)
    if op == "avg":
        out = out / out.dtype.type(comm.Get_size())
    return out.astype(x.dtype)
