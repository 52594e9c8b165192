"""A progress bar for long sweeps: on rank 0 only, on a terminal only, never with ``--quiet``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def progress_bar(comm: Any, total: int, label: str, quiet: bool) -> Iterator[Callable[[], None]]:
    """Yield ``advance()``; it draws a rich progress bar when this is rank 0 on a terminal."""
    if quiet or comm.rank != 0 or not sys.stderr.isatty():
        yield lambda: None
        return
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:  # rich is optional (pip install 'mpicoll[bench]')
        yield lambda: None
        return
    columns = (TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeRemainingColumn())
    with Progress(*columns, transient=True, console=None) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)
