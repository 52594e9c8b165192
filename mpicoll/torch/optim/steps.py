"""What the optimizers' ``step`` methods share: running the closure, and Adam's two moments."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


def run_closure(closure: Callable[[], Any] | None) -> Any:
    """``closure()`` with gradients enabled (``step`` runs under ``no_grad``), or ``None``."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def adam_moments(state: dict[Any, dict[str, Any]], params: Iterable[torch.Tensor]) -> None:
    """Give every parameter without state Adam's zeroed first and second moments."""
    for p in params:
        moments = state[p]
        if not moments:
            moments["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            moments["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
