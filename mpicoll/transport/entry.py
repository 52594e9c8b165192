"""The decorator every public collective wears: the stall watchdog and the timeline, in one place.

:func:`watched` is the only code that needs both the communicator registry (:mod:`.comm`, to
name the call's communicator in the timeline) and the watchdog (:mod:`.watchdog`); it lives here
so that neither of those two imports the other back (``comm`` -> ``watchdog`` is the one
direction). Off (no timeout, no timeline) a call pays two lookups.

One exception: :func:`mpicoll.allreduce` first tries a planned repeat (:func:`mpicoll.collectives.repeat.fast`)
outside the decorator, where the decorator would do nothing (the plan was made with the
watchdog off; no timeline), since its call layer is a tenth of a checked 4 KiB call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .. import timeline
from ..config import config
from .comm import as_comm
from .watchdog import watch

F = TypeVar("F", bound=Callable[..., Any])


def watched(collective: str) -> Callable[[F], F]:
    """Decorator: run a public collective under :func:`~.watchdog.watch` when ``config.timeout`` is
    set, and inside a timeline span when a timeline is recorded (one lookup each otherwise).

    The watch starts before anything else, the communicator's creation included (the ``Dup()``
    and host detection of a first call are collective, and a rank that never arrives must not
    leave this one waiting unwatched); the report names the world rank."""
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            if config.get("timeout") > 0:
                with watch(None, collective, kwargs.get("algorithm", "auto")):
                    return recorded(*args, **kwargs) if timeline.wanted() else fn(*args, **kwargs)
            return recorded(*args, **kwargs) if timeline.wanted() else fn(*args, **kwargs)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            c = as_comm(kwargs.get("comm"))  # its serial names the call's communicator in the trace
            return timeline.call(collective, c.serial, args[0] if args else kwargs.get("x"),
                                 kwargs.get("algorithm", "auto"), fn, args, kwargs)

        return run  # type: ignore[return-value]

    return decorate
