"""The exceptions mpicoll raises.

Every error derives from :class:`MpicollError` *and* from the matching builtin, so callers can
catch either ``mpicoll.MpicollError`` or the usual ``ValueError`` / ``TypeError``. Messages say
what was wrong, with which value, and what to do; errors that involve peers name their ranks.
Stdlib only: this module sits at the bottom of the layer stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class MpicollError(Exception):
    """Base class of every error raised by mpicoll."""


class ConfigError(MpicollError, ValueError):
    """An unknown configuration key or a value outside the accepted range."""


class UnsupportedError(MpicollError, ValueError):
    """A reduction op, dtype, algorithm or argument combination that mpicoll does not support."""


class ArgumentError(MpicollError, ValueError):
    """A local argument is malformed (wrong shape, wrong ``out`` buffer, bad root, ...)."""


class DtypeError(MpicollError, TypeError):
    """An array has a dtype the requested operation does not accept."""


class MismatchError(MpicollError, ValueError):
    """Ranks called the same collective with different arguments (count, dtype, op, root, ...).

    Attributes:
        field: the argument that differs.
        values: rank -> the value that rank passed.
    """

    def __init__(self, message: str, field: str = "", values: Mapping[int, object] | None = None):
        super().__init__(message)
        self.field = field
        self.values = dict(values or {})


class NonFiniteError(MpicollError, FloatingPointError):
    """An input holds NaN or infinity (reported when ``config.check_finite`` is on)."""


class PayloadError(MpicollError, ValueError):
    """A compressed payload that is truncated, malformed, or written by another compressor/version."""


class PeerError(MpicollError, RuntimeError):
    """A peer rank failed, died or sent something unusable. ``rank`` names it when known."""

    def __init__(self, message: str, rank: int | None = None):
        super().__init__(message)
        self.rank = rank


class UsageError(MpicollError, RuntimeError):
    """mpicoll was driven in an order it does not support, e.g. more backward passes in one round
    than ``backward_passes_per_step``."""


class RendezvousError(MpicollError, RuntimeError):
    """Setting up a job's rendezvous (torch's ``mpi://``) failed here: no reachable address, no store."""


class WaitTimeoutError(MpicollError, TimeoutError):
    """A wait with a timeout ran out before the operation finished (the operation itself goes on)."""


def accepted(values: Sequence[object]) -> str:
    """Format accepted values for an error message: ``'a', 'b' or 'c'``."""
    items = [repr(v) for v in values]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]
