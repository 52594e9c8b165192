"""The arguments of :class:`~mpicoll.torch.DistributedOptimizer`: which parameters it averages, under
which names, and the checks that refuse a bad call (on every rank: the optimizer agrees on them)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..backend import xp_of
from ..errors import ArgumentError
from .tensors import as_array

OPS = {"avg": "avg", "average": "avg", "sum": "sum"}


def check_settings(backward_passes_per_step: int, op: str, predivide: float) -> None:
    if backward_passes_per_step < 1:
        raise ArgumentError(f"DistributedOptimizer: backward_passes_per_step={backward_passes_per_step}, "
                            f"must be at least 1")
    if op not in OPS:
        raise ArgumentError(f"DistributedOptimizer: op={op!r}; use 'avg' or 'sum'")
    if predivide <= 0 or (predivide != 1.0 and OPS[op] != "avg"):
        raise ArgumentError(f"DistributedOptimizer: gradient_predivide_factor={predivide} needs op='avg' and a "
                            f"positive value")


def named_parameters_of(optimizer: torch.optim.Optimizer,
           named_parameters: Iterable[tuple[str, torch.Tensor]] | None) -> list[tuple[str, torch.Tensor]]:
    if named_parameters is None:
        named = []
        for g, group in enumerate(optimizer.param_groups):
            names = group.get("param_names") or [f"param_group{g}.{i}" for i in range(len(group["params"]))]
            named.extend(zip(names, group["params"], strict=True))
    else:
        named = list(named_parameters)
    for item in named:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor)):
            raise ArgumentError(f"DistributedOptimizer: named_parameters must yield (name, tensor) pairs, got "
                                f"{type(item).__name__}")
    return [(str(n), p) for n, p in named if p.requires_grad]


def check_named(optimizer: torch.optim.Optimizer, named: list[tuple[str, torch.Tensor]]) -> None:
    if len({n for n, _ in named}) != len(named):
        raise ArgumentError("DistributedOptimizer: parameter names must be unique")
    if len({id(p) for _, p in named}) != len(named):
        raise ArgumentError("DistributedOptimizer: a parameter appears under two names")
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"] if p.requires_grad}
    ours = {id(p) for _, p in named}
    missing = [n for n, p in named if id(p) not in in_optimizer]
    if missing:
        raise ArgumentError(f"DistributedOptimizer: parameters {missing[:5]} are not in the optimizer")
    if in_optimizer - ours:
        raise ArgumentError(f"DistributedOptimizer: {len(in_optimizer - ours)} parameter(s) of the optimizer are "
                            f"missing from named_parameters; their gradients would never be averaged")


def placeholder(param: torch.Tensor) -> Any:
    """A zero-memory array with the gradient's shape, dtype and device, for planning the buckets."""
    one = as_array(torch.zeros(1, dtype=param.dtype, device=param.device))
    return xp_of(one).broadcast_to(one[0], tuple(param.shape))
