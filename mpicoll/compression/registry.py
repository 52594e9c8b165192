"""The registry of compressors: ``get("topk", ratio=0.01)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import UnsupportedError, accepted
from .base import Compressor

_REGISTRY: dict[str, Callable[..., Compressor]] = {}
_CODECS: dict[int, str] = {}

T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: register a :class:`Compressor` subclass under its ``name`` and ``codec``."""
    if cls.name in _REGISTRY or cls.wire_id in _CODECS:
        raise ValueError(f"compressor {cls.name!r} / codec {cls.wire_id} is already registered")
    _REGISTRY[cls.name] = cls
    _CODECS[cls.wire_id] = cls.name
    return cls


def get(name: str, **params: Any) -> Compressor:
    """A new compressor ``name`` made with ``params`` (bad parameters raise with the accepted range)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnsupportedError(f"unknown compressor {name!r}; accepted: {accepted(sorted(_REGISTRY))}") from None
    try:
        return factory(**params)
    except TypeError as exc:
        raise UnsupportedError(f"compressor {name!r}: {exc}") from None


def names() -> list[str]:
    """Every registered compressor name."""
    return sorted(_REGISTRY)
