"""Progress bars for long CLI work (``rich``), one shape for every command: a context manager
yielding ``advance(done, total)``. Quiet when stderr is not a terminal (logs, CI, tests)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(description: str, force: bool | None = None
                 ) -> Iterator[Callable[[int, int], None]]:
    """``with progress_bar("reading items") as advance: advance(i, n)``. ``force``: draw (True)
    or not (False) whatever the terminal; default: only on a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    console = Console(stderr=True, force_terminal=force)
    show = sys.stderr.isatty() if force is None else force
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  disable=not show, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
