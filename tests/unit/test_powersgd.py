"""PowerSGD on one rank: the matrix view, exactness at full rank, warm-start convergence to the
best rank-r approximation, the wire size, dead columns, checkpoints and bad payloads."""

from __future__ import annotations

import numpy as np
import pytest

from mpicoll import compression
from mpicoll.compression import ErrorFeedback
from mpicoll.compression.payload import HEADER_BYTES
from mpicoll.compression.powersgd import matrix_shape, orthonormalize, reconstruct
from mpicoll.errors import ArgumentError, PayloadError


def low_rank(n: int, m: int, r: int, seed: int = 0, decay: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = decay ** np.arange(r)
    return ((rng.standard_normal((n, r)) * scales) @ rng.standard_normal((r, m))).astype(np.float32)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def test_matrix_view():
    assert matrix_shape((30, 4, 5)) == (30, 20)  # first dimension by the rest, as a weight gradient
    assert matrix_shape((1000,)) == (32, 32)  # near-square with padding (1024 >= 1000)
    assert matrix_shape((1024,)) == (32, 32)
    assert matrix_shape((1, 50)) == (8, 7)  # a row vector is really 1-D
    assert matrix_shape((1,)) == (1, 1) and matrix_shape((0,)) == (1, 1)


def test_full_rank_is_exact_and_the_wire_is_small():
    x = low_rank(120, 80, 3)
    codec = compression.get("powersgd", rank=3)
    payload, ctx = codec.compress(x, key="w")
    assert payload.nbytes == HEADER_BYTES + (120 + 80) * 3 * 4 == codec.payload_nbytes(x)
    assert rel(codec.decompress(payload, ctx), x) < 1e-5


def test_warm_start_converges_to_the_best_rank_r_approximation():
    x = low_rank(200, 150, 8, decay=0.7)  # distinct singular values: power iteration converges
    u, s, vt = np.linalg.svd(x.astype(np.float64))
    best = rel((u[:, :2] * s[:2]) @ vt[:2], x)  # Eckart-Young: the smallest error any rank-2 matrix has
    warm, cold = compression.get("powersgd", rank=2), compression.get("powersgd", rank=2, warm_start=False)
    errors = {"warm": [], "cold": []}
    for _ in range(15):
        for name, codec in (("warm", warm), ("cold", cold)):
            payload, ctx = codec.compress(x, key="w")
            errors[name].append(rel(codec.decompress(payload, ctx), x))
    assert errors["warm"][-1] < best * 1.01 < errors["warm"][0]
    assert min(errors["cold"]) > best * 1.05  # one iteration from scratch every step stays far off


def test_the_columns_of_p_are_orthonormal_and_a_dependent_column_becomes_zero():
    rng = np.random.default_rng(1)
    p = rng.standard_normal((500, 4)).astype(np.float32)
    p[:, 3] = p[:, 0] * 2 - p[:, 1]
    orthonormalize(p)
    gram = p.astype(np.float64).T @ p
    assert np.allclose(gram[:3, :3], np.eye(3), atol=1e-5)
    assert np.abs(p[:, 3]).max() < 1e-3 and np.isfinite(p).all()


def test_reconstruct_matches_the_matrix_product():
    rng = np.random.default_rng(2)
    p, q = rng.standard_normal((40, 3)).astype(np.float32), rng.standard_normal((30, 3)).astype(np.float32)
    want = (p.astype(np.float64) @ q.T).reshape(-1)
    assert np.allclose(reconstruct(p, q, 1200), want, rtol=1e-5, atol=1e-5)
    out = np.empty(1100, np.float32)  # padding cut off
    assert reconstruct(p, q, 1100, out) is out and np.allclose(out, want[:1100], rtol=1e-5, atol=1e-5)


def test_zero_input_gives_zeros_and_the_rank_recovers():
    codec = compression.get("powersgd", rank=2)
    payload, ctx = codec.compress(np.zeros((50, 40), np.float32), key="w")
    assert not codec.decompress(payload, ctx).any()
    assert np.abs(codec.q["w"]).max(axis=0).min() > 0  # no column of the next warm start is zero
    x = low_rank(50, 40, 2)
    for _ in range(3):
        payload, ctx = codec.compress(x, key="w")
    assert rel(codec.decompress(payload, ctx), x) < 1e-4  # the dead columns were drawn afresh


def test_state_round_trip_resumes_the_warm_start():
    x = low_rank(60, 70, 6, decay=0.8)
    a = ErrorFeedback(compression.get("powersgd", rank=2, seed=3))
    for _ in range(3):
        a.compress(x, key="w")
    b = ErrorFeedback(compression.get("powersgd", rank=2, seed=3))
    b.load_state_dict(a.state_dict())
    assert np.array_equal(a.compress(x, key="w")[0], b.compress(x, key="w")[0])
    with pytest.raises(ArgumentError, match="map keys"):
        compression.get("powersgd").load_state_dict({"q": [1, 2]})


def test_bad_parameters_and_mismatched_payloads():
    for params, accepted in [({"rank": 0}, r"\[1, 1024\]"), ({"rank": 2.5}, "integer"), ({"seed": -1}, r"\[0, ")]:
        with pytest.raises(ArgumentError, match=accepted):
            compression.get("powersgd", **params)
    x = low_rank(64, 64, 4)
    payload, _ = compression.get("powersgd", rank=4).compress(x)
    _, ctx = compression.get("powersgd", rank=2).compress(x)
    with pytest.raises(PayloadError, match=r"rank 4 .* needs rank 2"):
        compression.get("powersgd", rank=2).decompress(payload, ctx)
