"""A stock DDP script (examples/ddp_stock.py) run twice, on gloo and on the mpicoll backend, with
only the backend string changed: the parameters agree within float32 rounding after several
steps, also with uneven inputs under torch's Join and with mpicoll's communication hook."""

from __future__ import annotations

import pytest
from launch import run_ranks

torch = pytest.importorskip("torch")

RANKS = 3


def train(tmp_path, backend: str, variants: str) -> dict:
    out = tmp_path / f"{backend}.pt"
    result = run_ranks(RANKS, ["examples/ddp_stock.py", "--backend", backend, "--variants", variants,
                               "--out", str(out)], tmp_path, timeout=400)
    assert result.returncode == 0, result.stdout[-5000:]  # includes: identical on every rank, Join finished
    return torch.load(out)


def largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_stock_ddp_gives_gloos_parameters_on_the_mpicoll_backend(tmp_path):
    gloo = train(tmp_path, "gloo", "plain,join")
    ours = train(tmp_path, "mpicoll", "plain,join,hook,hook-fp16")
    for variant in ("plain", "join"):
        assert largest_difference(ours[variant], gloo[variant]) < 1e-6, variant  # float32 rounding
    assert largest_difference(ours["hook"], gloo["plain"]) < 1e-6
    assert largest_difference(ours["hook-fp16"], gloo["plain"]) < 1e-3  # fp16 gradients: close, not equal
    assert largest_difference(gloo["join"], gloo["plain"]) > 1e-4  # the uneven run really trained differently
