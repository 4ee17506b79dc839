"""The local backend: every task in this process, one after the other, in task order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from repscope.analysis.executors.outcomes import _Attempt, _call
from repscope.analysis.executors.scheduler import Executor


class LocalExecutor(Executor):
    """Runs every task in this process, one after the other, in task order."""

    kind = "local"
    refuses = {
        "workers": "runs one task at a time",
        "address": "runs tasks in this process and connects to no cluster",
        "timeout": "runs tasks in this process and cannot stop one",  # nothing can stop it
    }

    def __init__(self) -> None:
        self.workers = 1

    @classmethod
    def from_options(cls, workers: int | None, address: str | None,
                     **options: Any) -> LocalExecutor:
        return cls()

    def _submit(self, fn: Callable[[Any], Any], task: Any) -> _Attempt:
        return _call(fn, task)  # the handle is the finished attempt

    def _wait(self, handles: list[Any], timeout: float | None = None) -> list[Any]:
        return handles

    def _collect(self, handle: Any) -> _Attempt:
        return handle
