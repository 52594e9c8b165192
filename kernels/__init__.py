"""Kernel providers (installed as ``mpicoll.kernels``).

The compressors' hot loops have one NumPy reference each (:mod:`.reference`, the oracle) and
accelerated providers with the same signatures: Numba on the CPU, Numba-CUDA and CuPy on the
GPU. Each operation is declared once in :mod:`.ops` (parameters and argument checks); each
provider is a package with one module per family of operations and fills that table in.
:func:`get` resolves an operation for a device through the configured provider order.
Importing this package imports neither numba nor cupy; a provider loads on first use.
"""

from .providers import PROVIDERS, ProviderStatus, provider_status
from .registry import get, order, provider_ops

__all__ = ["PROVIDERS", "ProviderStatus", "get", "order", "provider_ops", "provider_status"]
