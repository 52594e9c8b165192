"""Optimizers that own their compression state: one module per optimizer.

- :class:`DGC`: momentum SGD with momentum-corrected, compressed velocity (Deep Gradient
  Compression), any sparse or quantized codec;
- :class:`OneBitAdam`: Adam with an uncompressed warm-up, then frozen variance and 1-bit momentum;
- :class:`ZeroOneAdam`: 0/1 Adam: variance at growing intervals, 1-bit gradients, then local steps
  synchronized by 1-bit compressed accumulated momentum at growing intervals.

All are ``torch.optim.Optimizer`` subclasses that do the all-reduce themselves inside ``step()``
(no DDP, no DistributedOptimizer around them), keep their residuals in ``state_dict()`` and refuse
a checkpoint taken at another world size.
"""

from .dgc import DGC
from .onebit_adam import OneBitAdam
from .zero_one_adam import ZeroOneAdam

__all__ = ["DGC", "OneBitAdam", "ZeroOneAdam"]
