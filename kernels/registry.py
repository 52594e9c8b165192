"""Resolve a kernel operation to a provider's implementation: ``get("topk", device="cpu")``.

Providers are tried in the order of ``config.kernel_providers`` (default
``cupy,numba-cuda,numba-cpu,numpy``), keeping those that run on the requested device. A provider
whose package is missing or cannot run here is skipped with one warning per process, naming the
reason and the provider used instead; NumPy (the reference) always works for the CPU.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from collections.abc import Callable
from typing import Any

from ..config import config
from ..errors import UnsupportedError, accepted
from .providers import PROVIDERS, provider_status

_MODULES = {
    "numpy": "reference",
    "numba-cpu": "numba_cpu",
    "numba-cuda": "numba_cuda",
    "cupy": "cupy_provider",
}
_tables: dict[str, dict[str, Callable[..., Any]] | str] = {}  # provider -> ops, or why unavailable
_warned: set[str] = set()
_lock = threading.Lock()


def provider_ops(name: str) -> dict[str, Callable[..., Any]]:
    """The operation table of one provider; raises :class:`UnsupportedError` if it cannot run here."""
    if name not in _MODULES:
        raise UnsupportedError(f"unknown kernel provider {name!r}; accepted: {accepted(list(_MODULES))}")
    with _lock:
        table = _tables.get(name)
        if table is None:
            table = _load(name)
            _tables[name] = table
    if isinstance(table, str):
        raise UnsupportedError(f"kernel provider {name!r} is unavailable: {table}")
    return table


def _load(name: str) -> dict[str, Callable[..., Any]] | str:
    status = provider_status(name)[0]
    if not status.available:
        return status.reason
    try:
        module = importlib.import_module(f"{__package__}.{_MODULES[name]}")
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return module.OPS


def order(device: str) -> list[str]:
    """Providers for ``device`` in configured order (unknown names in the setting are an error)."""
    names = [n.strip() for n in config.get("kernel_providers").split(",") if n.strip()]
    unknown = [n for n in names if n not in PROVIDERS]
    if unknown:
        raise UnsupportedError(f"MPICOLL_KERNEL_PROVIDERS names unknown provider(s) {unknown}; "
                               f"accepted: {accepted(list(PROVIDERS))}")
    chosen = [n for n in names if PROVIDERS[n] == device]
    if device == "cpu" and "numpy" not in chosen:
        chosen.append("numpy")  # the reference is always the last resort on the host
    return chosen


def get(op: str, device: str = "cpu", provider: str | None = None) -> Callable[..., Any]:
    """The implementation of ``op`` for ``device`` (``"cpu"`` or ``"cuda"``).

    Args:
        op: an operation name (declared in ``ops.OPERATIONS``).
        device: where the data lives.
        provider: force one provider (tests, benchmarks); no fallback then.
    """
    if provider is not None:
        ops = provider_ops(provider)
        if op not in ops:
            raise UnsupportedError(f"kernel provider {provider!r} has no operation {op!r}")
        return ops[op]
    skipped = []
    for name in order(device):
        try:
            ops = provider_ops(name)
        except UnsupportedError as exc:
            skipped.append((name, str(exc)))
            continue
        if op in ops:
            _warn_skipped(skipped, name)
            return ops[op]
    reasons = "; ".join(reason for _, reason in skipped) or "no provider is configured for this device"
    raise UnsupportedError(f"no kernel provider can run {op!r} on {device}: {reasons}")


def _warn_skipped(skipped: list[tuple[str, str]], used: str) -> None:
    for name, reason in skipped:
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"{reason}; using {used!r} instead (set MPICOLL_KERNEL_PROVIDERS to choose)",
                          stacklevel=4)


def reset() -> None:
    """Forget loaded tables and warnings (tests)."""
    with _lock:
        _tables.clear()
        _warned.clear()
