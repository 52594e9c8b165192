"""Kernel providers (installed as ``mpicoll.kernels``).

The compressors' hot loops have one NumPy reference each and optional accelerated providers
(Numba on the CPU, Numba-CUDA and CuPy on the GPU). This package only *describes* providers at
import time; a provider's heavy package (numba, cupy) is imported when it is first used.
"""

from .providers import PROVIDERS, ProviderStatus, provider_status

__all__ = ["PROVIDERS", "ProviderStatus", "provider_status"]
