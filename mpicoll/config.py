"""One configuration object with fixed keys and ``MPICOLL_*`` environment overrides.

Precedence, lowest first: the built-in default, the environment variable ``MPICOLL_<KEY>``
(read once, on first access), then :meth:`Config.set` / :meth:`Config.override` in code.
An unknown key or a bad value raises :class:`~mpicoll.errors.ConfigError` naming the key, the
value and what is accepted. Stdlib only.

Example:
    >>> from mpicoll import config
    >>> config.get("segment_bytes")  # doctest: +SKIP
    1048576
    >>> with config.override(validate=False):
    ...     pass
"""

from __future__ import annotations

import operator
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, accepted

ENV_PREFIX = "MPICOLL_"


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _parse_bytes(text: str) -> int:
    """Parse ``"256K"``, ``"1M"``, ``"4096"`` (binary multiples) into a byte count."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text[:-1] if scale != 1 else text
    return int(float(digits) * scale)


@dataclass(frozen=True)
class Setting:
    """One configuration key: its default, how to read it from the environment, how to check it."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    check: Callable[[Any], Any]
    doc: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("expected True or False")


def _int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        try:  # any integer type (numpy's included), but not bool
            number = None if isinstance(value, bool) else operator.index(value)
        except TypeError:
            number = None
        if number is None or not lo <= number <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}")
        return number

    return check


def _float_range(lo: float, hi: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ValueError(f"expected a number of seconds from {lo} to {hi}")
        return float(value)

    return check


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected {accepted(choices)}")
        return value

    return check


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "validate", True, _parse_bool, _bool,
            "Before each collective, check with one small allgather that all ranks passed the same "
            "count, dtype, op and root; a mismatch raises MismatchError on every rank.",
        ),
        Setting(
            "segment_bytes", 1 << 20, _parse_bytes, _int_range(1 << 10, 1 << 30),
            "Pipeline segment size: large messages move in segments of this many bytes so that the "
            "transfer of one segment overlaps the reduction of the previous one.",
        ),
        Setting(
            "pipeline_depth", 3, int, _int_range(1, 64),
            "How many segment receives a pipelined algorithm keeps in flight.",
        ),
        Setting(
            "auto_table", "", str, _str,
            "Path of a JSON table (written by `mpicoll-bench tune`) that algorithm='auto' reads "
            "instead of the bundled one.",
        ),
        Setting(
            "cuda_aware", "unset", str.strip, _choice("unset", "0", "1"),
            "Whether the MPI library may be handed GPU buffers directly: '1' yes; '0' or 'unset' no "
            "(GPU buffers are then staged through pinned host memory; 'unset' warns once).",
        ),
        Setting(
            "kernel_providers", "cupy,numba-cuda,numba-cpu,numpy", str.strip, _str,
            "Order in which kernel providers are tried, comma-separated.",
        ),
        Setting(
            "timeout", 0.0, float, _float_range(0.0, 7 * 86400.0),
            "Watchdog: seconds a rank may wait inside one collective before it reports which collective, "
            "step and peer it waits on, and aborts the job (0 = off).",
        ),
        Setting(
            "check_finite", False, _parse_bool, _bool,
            "Check the inputs of reducing collectives for NaN and infinity; the rank and index of the first "
            "bad value are reported on every rank.",
        ),
        Setting(
            "host_layout", "", str.strip, _str,
            "Ranks per host in rank order, e.g. '2,1', for communicators of that size, instead of asking "
            "MPI which ranks share memory (for tests and test beds; empty = ask MPI).",
        ),
        Setting(
            "engine_poll_us", 200.0, float, _float_range(0.0, 100000.0),
            "The non-blocking engine waits by polling with sleeps that grow up to this many microseconds, "
            "so its thread leaves the cores to the caller's compute (0 = spin inside MPI, as a blocking "
            "call does).",
        ),
        Setting(
            "timeline", "", str.strip, _str,
            "Record a timeline of every collective and its phases on every rank into this Chrome-trace "
            "JSON file (rank 0 merges all ranks at exit; empty = off). See mpicoll.timeline.",
        ),
        Setting(
            "model", "", str.strip, _str,
            "A machine model written by `mpicoll-bench probe --json` for compressor='auto' to choose codecs "
            "with (empty = probe this job's machine at the first decision, a few seconds). See mpicoll.model.",
        ),
        Setting(
            "abort_on_error", True, _parse_bool, _bool,
            "With more than one rank, an uncaught exception aborts every rank (MPI_Abort) instead of leaving "
            "the others waiting forever.",
        ),
    )
}


class Config:
    """The process-wide settings. Use the module-level instance :data:`config`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] | None = None
        self._thread = threading.local()
        self._pins = 0  # pinned() blocks open in any thread: while none is, get() skips the thread-local
        self._generation = 0  # bumped by every change of a value (see stamp)

    def _load(self) -> dict[str, Any]:
        with self._lock:
            if self._values is None:
                self._values = {name: self._from_env(s) for name, s in SETTINGS.items()}
                self._warn_unknown_env()
            return self._values

    @staticmethod
    def _from_env(setting: Setting) -> Any:
        raw = os.environ.get(setting.env)
        if raw is None or raw == "":
            return setting.default
        try:
            return setting.check(setting.parse(raw))
        except ValueError as exc:
            raise ConfigError(f"environment variable {setting.env}={raw!r} is invalid: {exc}") from None

    @staticmethod
    def _warn_unknown_env() -> None:
        known = {s.env for s in SETTINGS.values()}
        for name in sorted(os.environ):
            if name.startswith(ENV_PREFIX) and name not in known:
                warnings.warn(
                    f"{name} is not an mpicoll setting and is ignored; known: {', '.join(sorted(known))}",
                    stacklevel=3,
                )

    @staticmethod
    def _setting(key: str) -> Setting:
        try:
            return SETTINGS[key]
        except KeyError:
            raise ConfigError(f"unknown mpicoll setting {key!r}; accepted: {', '.join(SETTINGS)}") from None

    def get(self, key: str) -> Any:
        """Return the current value of ``key`` (this thread's :meth:`pinned` values first)."""
        if self._pins:  # a thread's own pinned() raised this before any of its reads: no race for it
            pinned = getattr(self._thread, "values", None)
            if pinned is not None and key in pinned:
                return pinned[key]
        values = self._values
        if values is not None and key in values:  # the hot path: one dict lookup, no lock
            return values[key]
        return self._load()[self._setting(key).name]

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def touch(self) -> None:
        """Note that something derived from the settings changed without a value changing (the
        ``auto`` table was rewritten, say): bumps :attr:`stamp`."""
        with self._lock:
            self._generation += 1

    @property
    def stamp(self) -> int:
        """A number that changes whenever any value may have changed (:meth:`set`, :meth:`override`,
        :meth:`reload`), and ``-1`` while a :meth:`pinned` block is open in any thread: what was
        derived from the settings under one stamp (a planned call, say) holds while it is the same."""
        return -1 if self._pins else self._generation

    def set(self, **values: Any) -> None:
        """Set one or more keys for the rest of the process, after checking every value."""
        checked = {}
        for key, value in values.items():
            setting = self._setting(key)
            try:
                checked[key] = setting.check(value)
            except ValueError as exc:
                raise ConfigError(f"mpicoll setting {key}={value!r} is invalid: {exc}") from None
        values = self._load()
        with self._lock:
            values.update(checked)
            self._generation += 1

    @contextmanager
    def override(self, **values: Any) -> Iterator[None]:
        """Temporarily set keys inside a ``with`` block, restoring the previous values after it."""
        current = self._load()
        saved = {key: current[self._setting(key).name] for key in values}
        self.set(**values)
        try:
            yield
        finally:
            with self._lock:
                current.update(saved)
                self._generation += 1

    @contextmanager
    def pinned(self, values: dict[str, Any]) -> Iterator[None]:
        """Inside the block, this thread reads ``values`` (from :meth:`as_dict`), whatever other
        threads set meanwhile: the non-blocking engine runs each collective with the settings in
        force when it was started, so every rank runs it the same way."""
        previous = getattr(self._thread, "values", None)
        with self._lock:
            self._pins += 1
        self._thread.values = values
        try:
            yield
        finally:
            self._thread.values = previous
            with self._lock:
                self._pins -= 1

    def as_dict(self) -> dict[str, Any]:
        """A copy of every key and its current value."""
        return dict(self._load())

    def reload(self) -> None:
        """Forget values set in code and read the environment again (for tests)."""
        with self._lock:
            self._values = None
            self._generation += 1


config = Config()
