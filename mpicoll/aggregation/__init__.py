"""Compressed collectives: the path is chosen from the compressor's traits (see :mod:`.api`)."""

from .api import compressed_allreduce, compressed_iallreduce
from .autocodec import AutoCodec
from .buckets import GradientBuckets

__all__ = ["AutoCodec", "GradientBuckets", "compressed_allreduce", "compressed_iallreduce"]
