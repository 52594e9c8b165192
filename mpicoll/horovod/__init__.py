"""Horovod-compatible front ends on mpicoll: ``import mpicoll.horovod.torch as hvd``.

Only the PyTorch one exists (:mod:`mpicoll.horovod.torch`); it imports torch, so this package
imports nothing.
"""
