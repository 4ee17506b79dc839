"""One rich progress bar layout for every long-running stage (capture, measures, sweeps)."""

from __future__ import annotations

from typing import Any

__all__ = ["rich_progress"]


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
