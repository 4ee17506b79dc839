"""One rich progress bar layout for every long-running stage (capture, measures, sweeps)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ProgressBar", "format_bytes", "format_seconds", "rich_progress"]


def rich_progress(label: str, *fields: str, console: Any = None) -> Any:
    """A started-later ``rich.progress.Progress``: label, bar, done/total, extra text columns,
    elapsed and remaining time. ``fields`` are TextColumn templates, e.g.
    ``"{task.fields[rate]}"``. Prints to stderr unless a console is given."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(),
        *(TextColumn(f) for f in fields),
        TimeElapsedColumn(), TimeRemainingColumn(),
        console=console if console is not None else Console(stderr=True), transient=False,
    )


class ProgressBar:
    """The :func:`rich_progress` layout over one task, as a context manager; a no-op when
    ``enabled`` is False (rich is then not even imported).

    ``label`` and ``fields`` are the column templates of :func:`rich_progress`; ``description``,
    ``completed`` and ``values`` (the initial ``task.fields``) start the task. Inside the block,
    :meth:`update` takes ``rich.progress.Progress.update``'s keywords (``advance=``,
    ``completed=``, ``description=``, field values)::

        with ProgressBar(len(items), "{task.description}", "{task.fields[rate]}",
                         description="capture", enabled=progress, rate="") as bar:
            for item in items:
                ...
                bar.update(advance=1, rate=f"{speed:,.0f} tok/s")
    """

    def __init__(self, total: int, label: str = "{task.description}", *fields: str,
                 description: str = "", completed: int = 0, enabled: bool = True,
                 console: Any = None, **values: Any) -> None:
        self.total, self.label, self.fields = total, label, fields
        self.description, self.completed, self.values = description, completed, values
        self.enabled, self.console = enabled, console
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self._bar = rich_progress(self.label, *self.fields, console=self.console)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total,
                                            completed=self.completed, **self.values)
        return self

    def update(self, **changes: Any) -> None:
        """Update the task (no-op when disabled)."""
        if self._bar is not None:
            self._bar.update(self._task, **changes)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def format_seconds(s: float) -> str:
    """``42 s``, ``7 min``, ``1.5 h`` (``?`` when not finite)."""
    if not math.isfinite(s):
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def format_bytes(b: float) -> str:
    """``512 B``, ``3.0 MiB``, ``1.2 GiB``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{int(b)} B"
