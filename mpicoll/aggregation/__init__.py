"""Compressed collectives: the path is chosen from the compressor's traits (see :mod:`.api`)."""

from .api import compressed_allreduce

__all__ = ["compressed_allreduce"]
