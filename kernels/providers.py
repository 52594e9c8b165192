"""Which kernel providers exist and whether each can run here, with the reason when not."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from . import threads as _threads  # noqa: F401 - Numba's thread settings must precede its first import

#: provider name -> the device it runs on
PROVIDERS: dict[str, str] = {
    "numpy": "cpu",
    "numba-cpu": "cpu",
    "numba-cuda": "cuda",
    "cupy": "cuda",
}


@dataclass(frozen=True)
class ProviderStatus:
    """Whether a provider can run here; ``reason`` says why not (or what it found)."""

    name: str
    device: str
    available: bool
    reason: str


def _numba_cpu() -> tuple[bool, str]:
    if importlib.util.find_spec("numba") is None:
        return False, "numba is not installed (pip install 'mpicoll[numba]')"
    numba = importlib.import_module("numba")
    return True, f"numba {numba.__version__}"


def _numba_cuda() -> tuple[bool, str]:
    if importlib.util.find_spec("numba") is None:
        return False, "numba is not installed (pip install 'mpicoll[cuda]')"
    if _simulator_enabled():
        return True, "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    from numba import cuda

    if not cuda.is_available():
        return False, "no usable CUDA GPU or driver found by numba.cuda"
    name = cuda.get_current_device().name
    return True, name.decode() if isinstance(name, bytes) else str(name)


def _simulator_enabled() -> bool:
    import os

    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def _cupy() -> tuple[bool, str]:
    if importlib.util.find_spec("cupy") is None:
        return False, "cupy is not installed (pip install 'mpicoll[cuda]')"
    try:
        cupy = importlib.import_module("cupy")
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # any CUDA driver/runtime failure means "not usable here"
        return False, f"cupy is installed but CUDA is not usable: {type(exc).__name__}: {exc}"
    if count == 0:
        return False, "cupy is installed but no CUDA device is visible"
    return True, f"cupy {cupy.__version__}, {count} device(s)"


_CHECKS = {
    "numpy": lambda: (True, "reference implementation, always available"),
    "numba-cpu": _numba_cpu,
    "numba-cuda": _numba_cuda,
    "cupy": _cupy,
}


def provider_status(name: str | None = None) -> list[ProviderStatus]:
    """Probe providers (importing their packages) and report availability.

    Args:
        name: one provider to probe; all of them when ``None``.
    """
    names = [name] if name is not None else list(PROVIDERS)
    out = []
    for provider in names:
        try:
            ok, reason = _CHECKS[provider]()
        except Exception as exc:  # a broken optional install must not break `mpicoll info`
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        out.append(ProviderStatus(provider, PROVIDERS[provider], ok, reason))
    return out
