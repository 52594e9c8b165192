"""Registries of algorithms, one per collective.

An algorithm is one module that decorates its function with :func:`register`; the public API
looks it up by name. Adding an algorithm is one new file plus its import in ``__init__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import UnsupportedError, accepted

COLLECTIVES = ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce", "compressed_allreduce",
               "alltoall")

_REGISTRY: dict[str, dict[str, Callable[..., Any]]] = {name: {} for name in COLLECTIVES}

F = TypeVar("F", bound=Callable[..., Any])


def register(collective: str, name: str) -> Callable[[F], F]:
    """Decorator: register ``fn`` as algorithm ``name`` of ``collective``."""
    if collective not in _REGISTRY:
        raise ValueError(f"unknown collective {collective!r}; known: {', '.join(COLLECTIVES)}")

    def decorate(fn: F) -> F:
        if name in _REGISTRY[collective]:
            raise ValueError(f"algorithm {name!r} is already registered for {collective}")
        _REGISTRY[collective][name] = fn
        return fn

    return decorate


def get_algorithm(collective: str, name: str) -> Callable[..., Any]:
    """The function registered as ``name`` for ``collective``."""
    try:
        return _REGISTRY[collective][name]
    except KeyError:
        names = [*_REGISTRY[collective], "auto"]
        raise UnsupportedError(
            f"{collective}: unknown algorithm {name!r}; accepted: {accepted(names)}"
        ) from None


def algorithm_names(collective: str) -> list[str]:
    """Registered algorithm names for ``collective`` (``"auto"`` not included)."""
    return list(_REGISTRY[collective])
