"""Compressed collectives: the path is chosen from the compressor's traits (see :mod:`.api`)."""

from .api import compressed_allreduce, compressed_iallreduce
from .buckets import GradientBuckets

__all__ = ["GradientBuckets", "compressed_allreduce", "compressed_iallreduce"]
